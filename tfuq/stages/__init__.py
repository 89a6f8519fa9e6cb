"""The job's stages: thin orchestration of the packages below, called directly by :mod:`tfuq.cli`.

``train`` (:mod:`~tfuq.stages.train`), ``calibrate``
(:mod:`~tfuq.stages.calibrate`), ``infer`` (:mod:`~tfuq.stages.infer`),
``evaluate`` (:mod:`~tfuq.stages.evaluate`), ``export``
(:mod:`~tfuq.stages.export`), ``info`` (:mod:`~tfuq.stages.info`) and the
whole job, ``demo`` (:mod:`~tfuq.stages.demo`). The papers' uncertainty
experiments, which train and infer through these stages, are one floor up in
:mod:`tfuq.experiments`.
"""
