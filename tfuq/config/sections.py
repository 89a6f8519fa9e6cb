"""The INI sections as frozen dataclasses, one per section (NiftyNet's shape).

Reserved sections are :data:`SECTIONS`; ``[REGRESSION]`` or ``[GAN]`` names the
application; every other section is an input source (e.g. ``[MR]``, ``[CT]``)
with NiftyNet's input keys. Key names and meanings follow NiftyNet's
config_spec where NiftyNet has the key; tfuq's own keys say so in their help.
NiftyNet keys tfuq has no field for (``whitening``, ``cuda_devices``, ...) are
translated or refused by :mod:`tfuq.config.niftynet` before these are parsed.
"""

from __future__ import annotations

import dataclasses

from tfuq.config.fields import setting

__all__ = [
    "APPLICATIONS",
    "CALIBRATION",
    "PHASES",
    "SECTIONS",
    "CalibrationSection",
    "EvaluationSection",
    "ExportSection",
    "GanSection",
    "InferenceSection",
    "InputSource",
    "NetworkSection",
    "PhantomSection",
    "RegressionSection",
    "SystemSection",
    "TrainingSection",
    "UncertaintySection",
]

#: Dataset phases (NiftyNet names), the single definition used everywhere.
TRAINING = "Training"
VALIDATION = "Validation"
INFERENCE = "Inference"
#: Held out for recalibration and the QC threshold; only from a split file (never drawn at random).
CALIBRATION = "Calibration"
PHASES = (TRAINING, VALIDATION, CALIBRATION, INFERENCE)
NETWORKS = ("unet", "highres3dnet", "multires", "pix2pix", "upgan")


@dataclasses.dataclass(frozen=True)
class SystemSection:
    """``[SYSTEM]``: where things go, devices, precision and seeds."""

    model_dir: str = setting(
        "", "model/log folder; relative to the INI folder; empty = the INI folder", path="ini"
    )
    dataset_split_file: str = setting(
        "dataset_split.csv", "subject,phase CSV made on first use; relative to model_dir", path="model_dir"
    )
    num_threads: int = setting(2, "threads for data loading", min=1)
    num_gpus: int = setting(1, "GPUs to train on (ignored when none is visible)", min=0)
    cpu_devices: int = setting(
        0,
        "tfuq: without GPUs, split the CPU into this many logical devices for strategy = mirrored "
        "(data parallelism on one machine without code); 0 = as TensorFlow sees it (one)",
        min=0,
    )
    strategy: str = setting(
        "auto", "tfuq: tf.distribute strategy", choices=("auto", "one_device", "mirrored", "multi_worker")
    )
    mixed_precision: str = setting(
        "float32", "tfuq: Keras dtype policy", choices=("float32", "mixed_float16", "mixed_bfloat16")
    )
    seed: int = setting(0, "tfuq: seed for splits, sampling, dropout and initialisation", min=0)


@dataclasses.dataclass(frozen=True)
class NetworkSection:
    """``[NETWORK]``: the model and how windows are batched."""

    name: str = setting("unet", "one of unet, highres3dnet, multires, pix2pix, upgan, or keras:path.keras")
    activation_function: str = setting(
        "relu", "activation of hidden layers", choices=("relu", "leaky_relu", "prelu", "elu", "selu", "gelu")
    )
    batch_size: int = setting(2, "windows per training step (global batch)", min=1)
    decay: float = setting(0.0, "weight regularisation strength", min=0.0)
    reg_type: str = setting("L2", "weight regularisation type", choices=("L1", "L2"))
    volume_padding_size: tuple[int, ...] = setting(
        (0, 0, 0), "voxels padded on each side of a volume before sampling", min=0, length=(1, 3)
    )
    volume_padding_mode: str = setting(
        "minimum", "numpy.pad mode", choices=("minimum", "constant", "edge", "reflect", "symmetric")
    )
    window_sampling: str = setting(
        "uniform", "training window sampler", choices=("uniform", "weighted", "balanced", "resize")
    )
    queue_length: int = setting(5, "windows buffered for shuffling", min=1)
    spatial_mode: str = setting(
        "auto",
        "tfuq: unet/pix2pix/upgan/highres3dnet dimensionality; auto = 2d when the window is H, W or "
        "H, W, 1, else 3d; 2.5d = slabs H, W, S (unet/upgan, Reinhold)",
        choices=("auto", "2d", "2.5d", "3d"),
    )
    depth: int = setting(
        0, "tfuq: down/up levels of U-Net generators; 0 = the model's (unet/upgan 3, pix2pix 8)", min=0
    )
    base_filters: int = setting(
        0,
        "tfuq: channels of the first layer; 0 = the model's (unet/upgan 32, pix2pix 64, "
        "highres3dnet/multires 16)",
        min=0,
    )
    feature_norm: str = setting(
        "batch", "tfuq: normalisation layer inside the networks", choices=("batch", "instance", "none")
    )
    blocks_per_stack: int = setting(
        3, "tfuq: highres3dnet/multires residual blocks per dilation stack (NiftyNet 3)", min=1
    )
    residual_matching: str = setting(
        "pad",
        "tfuq: highres3dnet/multires shortcut widening: zero channels (NiftyNet) or 1x1x1 projection",
        choices=("pad", "projection"),
    )
    multires_factors: tuple[int, ...] = setting(
        (1, 2, 4),
        "tfuq: multires downsampling factor of each level, finest first; the input windows are the "
        "central spatial_window_size crops of a window of spatial_window_size x the last factor",
        min=1,
    )
    branch_filters: tuple[int, ...] = setting(
        (256, 256, 128),
        "tfuq: multires widths of the first three 1x1x1 convolutions of each branch",
        min=1,
        length=3,
    )
    deep_supervision: bool = setting(False, "tfuq: multires also outputs the coarser levels' predictions")
    num_phases: int = setting(3, "tfuq: upgan cascaded generators M (Upadhyay 3)", min=1)


@dataclasses.dataclass(frozen=True)
class TrainingSection:
    """``[TRAINING]``: optimiser, iterations, checkpoints, validation, augmentation."""

    optimiser: str = setting(
        "adam", "optimiser", choices=("adam", "adamw", "sgd", "momentum", "nesterov", "rmsprop", "adagrad")
    )
    lr: float = setting(1e-3, "learning rate", min=0.0, min_exclusive=True)
    beta_1: float = setting(0.9, "tfuq: Adam/AdamW beta_1", min=0.0, max=1.0, max_exclusive=True)
    beta_2: float = setting(0.999, "tfuq: Adam/AdamW beta_2", min=0.0, max=1.0, max_exclusive=True)
    weight_decay: float = setting(0.0, "tfuq: decoupled weight decay (adamw)", min=0.0)
    lr_schedule: str = setting(
        "constant", "tfuq: learning-rate schedule", choices=("constant", "cosine", "step")
    )
    momentum: float = setting(
        0.9, "tfuq: momentum of the momentum and nesterov optimisers", min=0.0, max=1.0, max_exclusive=True
    )
    lr_step_every_n: int = setting(
        0, "tfuq: step schedule: multiply lr by lr_step_factor every n iterations; 0 = max_iter // 3", min=0
    )
    lr_step_factor: float = setting(0.1, "tfuq: step schedule factor", min=0.0, max=1.0, min_exclusive=True)
    grad_clip_norm: float = setting(0.0, "tfuq: clip gradients to this global norm; 0 = off", min=0.0)
    loss_type: str = setting(
        "nll",
        "nll of [UNCERTAINTY] family, or an l1/l2 baseline ([REGRESSION] only; [GAN] sets its generator "
        "loss with lambda_*); NiftyNet's L1Loss/MAE read as l1, L2Loss/RMSE as l2",
        choices=("nll", "l1", "l2"),
    )
    nll_beta: float = setting(
        0.0,
        "tfuq: beta-NLL (Seitzer et al. 2022): each voxel's NLL weighted by its predicted variance^beta "
        "(no gradient through the weight), so uncertain voxels still teach the mean; 0 = plain NLL",
        min=0.0,
        max=1.0,
    )
    sample_per_volume: int = setting(1, "windows drawn from each volume per pass", min=1)
    starting_iter: int = setting(
        -1, "-1 = resume from the latest checkpoint if any; 0 = from scratch", min=-1
    )
    max_iter: int = setting(10000, "total training iterations", min=0)
    save_every_n: int = setting(500, "checkpoint every n iterations; 0 = only at the end", min=0)
    max_checkpoints: int = setting(5, "recent checkpoints kept", min=1)
    tensorboard_every_n: int = setting(20, "TensorBoard summaries every n iterations; 0 = off", min=0)
    validation_every_n: int = setting(-1, "validate every n iterations; <= 0 = off", min=-1)
    validation_max_iter: int = setting(
        1,
        "validation batches per validation: the same windows every time, drawn from the Validation "
        "subjects in turn",
        min=1,
    )
    log_every_n: int = setting(1, "tfuq: a <model_dir>/logs/training.csv row every n iterations", min=1)
    early_stopping_patience: int = setting(
        0, "tfuq: stop after this many validations without a lower validation loss; 0 = off", min=0
    )
    early_stopping_start: int = setting(
        0,
        "tfuq: validations before this iteration do not count for early stopping nor as the best "
        "checkpoint (Keras start_from_epoch); 0 = from the first",
        min=0,
    )
    convergence_window: int = setting(
        0,
        "tfuq: stop when the mean loss of the last n iterations is within convergence_tolerance of "
        "the n before (Klaser 5000); 0 = off",
        min=0,
    )
    convergence_tolerance: float = setting(
        0.05, "tfuq: relative loss change of convergence_window (Klaser 0.05)", min=0.0, min_exclusive=True
    )
    exclude_fraction_for_validation: float = setting(
        0.0, "fraction of subjects for validation", min=0.0, max=1.0, max_exclusive=True
    )
    exclude_fraction_for_inference: float = setting(
        0.0, "fraction of subjects for inference (test)", min=0.0, max=1.0, max_exclusive=True
    )
    rotation_angle: tuple[float, ...] = setting(
        (), "random rotation range in degrees, e.g. -10, 10", length=2
    )
    scaling_percentage: tuple[float, ...] = setting(
        (), "random scaling range in percent, e.g. -10, 10", length=2
    )
    random_flipping_axes: tuple[int, ...] = setting(
        (), "axes that may be flipped, e.g. 0, 1; empty or -1 = none", min=-1, max=2
    )
    bias_field_range: tuple[float, ...] = setting(
        (), "random bias field coefficient range, e.g. -0.5, 0.5", length=2
    )
    bf_order: int = setting(3, "polynomial order of the random bias field", min=1)
    intensity_shift: float = setting(
        0.0, "tfuq: random intensity shift range (normalised units); 0 = off", min=0.0
    )


#: ``[INFERENCE] derived`` values: the names of :data:`tfuq.inference.derived.DERIVED_QUANTITIES`
#: (written out here so the configuration does not import inference; a test keeps them equal).
DERIVED_CHOICES = ("mu_map_511kev",)


@dataclasses.dataclass(frozen=True)
class InferenceSection:
    """``[INFERENCE]``: sliding-window prediction and outputs."""

    spatial_window_size: tuple[int, ...] = setting(
        (), "inference window; empty = the input section's", min=1, length=(2, 3)
    )
    border: tuple[int, ...] = setting(
        (0, 0, 0), "voxels cropped from each side of an output window", min=0, length=(1, 3)
    )
    inference_iter: int = setting(-1, "checkpoint iteration to use; -1 = latest", min=-1)
    num_shards: int = setting(
        1, "tfuq: split the subjects to infer over this many processes (machines, workers)", min=1
    )
    shard_index: int = setting(
        0,
        "tfuq: which of num_shards this process infers: the subjects k (sorted ids) with k % n == index",
        min=0,
    )
    precision: str = setting(
        "auto",
        "tfuq: compute precision of infer/calibrate/validate-uq/export; bfloat16 = the network in bfloat16 "
        "(head, moments and maps float32), faster on CPUs with AVX512-BF16/AMX; auto = as trained "
        "(bfloat16 for a model trained with [SYSTEM] mixed_precision = mixed_bfloat16, else float32)",
        choices=("auto", "float32", "bfloat16"),
    )
    save_seg_dir: str = setting("inference", "output folder; relative to model_dir", path="model_dir")
    output_postfix: str = setting("", "appended to output file stems")
    output_interp_order: int = setting(1, "interpolation order when resampling outputs back", min=0, max=5)
    dataset_to_infer: str = setting(
        "", "phase to infer; empty = Inference (all subjects without a split)", choices=("", *PHASES, "all")
    )
    window_overlap: float = setting(
        0.5, "tfuq: fractional overlap of inference windows", min=0.0, max=1.0, max_exclusive=True
    )
    blending: str = setting(
        "gaussian", "tfuq: how overlapping windows are blended", choices=("constant", "gaussian", "hann")
    )
    batch_size: int = setting(4, "tfuq: windows per inference batch", min=1)
    overwrite: bool = setting(False, "tfuq: replace existing output files (otherwise they are refused)")
    derived: tuple[str, ...] = setting(
        (),
        "tfuq: derived quantities written with their uncertainty by double sampling; mu_map_511kev: "
        "PET attenuation map (cm^-1) from a CT target in HU (Carney et al. 2006, 120 kVp)",
        choices=DERIVED_CHOICES,
    )
    derived_draws: int = setting(32, "tfuq: draws per MC pass for the derived quantities", min=1)


@dataclasses.dataclass(frozen=True)
class EvaluationSection:
    """``[EVALUATION]``: metrics, tables and plots."""

    save_csv_dir: str = setting(
        "evaluation", "metrics, plots and report folder; relative to model_dir", path="model_dir"
    )
    evaluations: tuple[str, ...] = setting(
        (
            "mae",
            "mse",
            "rmse",
            "psnr",
            "ssim",
            "nll",
            "calibration",
            "coverage",
            "sharpness",
            "ause",
            "spearman",
            "nrmse",
        ),
        "metric groups reported in metrics.csv and summary.json (each with its _image and "
        "_recalibrated variants; the others are null in summary.json); plots are always written",
        choices=(
            "mae",
            "mse",
            "rmse",
            "psnr",
            "ssim",
            "nrmse",
            "nll",
            "calibration",
            "coverage",
            "sharpness",
            "ause",
            "spearman",
        ),
    )
    units: str = setting("", "tfuq: target units on plots; empty = HU for a CT target section, else none")
    target_units: str = setting(
        "native",
        "tfuq: units of metrics and plots: native = as the maps are written (the training subjects' "
        "target units); normalised = maps back through the stored target normalisation, each truth "
        "normalised by its section's method fitted on itself (MR: arbitrary units per scan; labelled "
        "normalised, ignoring units)",
        choices=("native", "normalised"),
    )
    overwrite: bool = setting(False, "tfuq: replace existing evaluation and validate-uq outputs")
    noise_levels: tuple[float, ...] = setting(
        (0.0, 0.05, 0.1, 0.2),
        "tfuq: validate-uq input noise sweep: Gaussian noise std added to the normalised inputs "
        "(a fraction of each input's normalisation scale), rising",
        min=0.0,
    )
    size_sweep: tuple[int, ...] = setting(
        (1, 2, 4),
        "tfuq: validate-uq training-set sizes (nested subsets of the Training subjects), rising; "
        "empty = no size sweep",
        min=1,
    )
    size_sweep_iter: int = setting(
        100, "tfuq: validate-uq training iterations of each size-sweep model (the most with patience)", min=1
    )
    size_sweep_patience: int = setting(
        0,
        "tfuq: validate-uq size-sweep models stop after this many validations ([TRAINING] "
        "validation_every_n, the Validation subjects) without a lower loss and keep the best weights "
        "(Reinhold: until the validation loss plateaued); 0 = exactly size_sweep_iter iterations",
        min=0,
    )
    size_sweep_min_iter: int = setting(
        0,
        "tfuq: validate-uq size-sweep models train at least this many iterations before "
        "size_sweep_patience counts (their [TRAINING] early_stopping_start)",
        min=0,
    )
    size_sweep_repeats: int = setting(
        1,
        "tfuq: validate-uq size-sweep repeats averaged per size, each with its own nested subsets and seed",
        min=1,
    )
    size_sweep_members: int = setting(
        1,
        "tfuq: validate-uq networks per size-sweep model, differing only in seed and scored as one deep "
        "ensemble (members x MC samples); 1 = the configured model alone",
        min=1,
    )
    size_sweep_keep: bool = setting(
        False,
        "tfuq: validate-uq keeps each size-sweep model (the weights it scored) in "
        "<save_csv_dir>/size_sweep/seed<seed>-n<size>, a model_dir for tfuq infer; false = a temporary "
        "folder, deleted",
    )
    required_checks: tuple[str, ...] = setting(
        ("noise", "size", "anomaly", "phantom_noise"),
        "tfuq: validate-uq checks whose failure makes it exit 2 (noise: aleatoric rises with input "
        "noise; size: epistemic falls with the training set; anomaly: AUROC and ratio; phantom_noise: "
        "Spearman with the true noise); the others are reported only; empty = report every check",
        choices=("noise", "size", "anomaly", "phantom_noise"),
    )
    anomaly_size: int = setting(
        0, "tfuq: validate-uq zero-cube side in voxels; 0 = a sixth of the smallest axis", min=0
    )
    anomaly_trials: int = setting(3, "tfuq: validate-uq anomalies inserted (one per trial)", min=0)
    anomaly_min_changed: float = setting(
        0.5,
        "tfuq: validate-uq fraction of a zero cube's voxels whose input must be away from zero (by more "
        "than 10 % of the input's span), so no cube lands where zeroing changes nothing (air, gas); "
        "0 = anywhere in the mask (Reinhold)",
        min=0.0,
        max=1.0,
    )
    uq_subjects: int = setting(
        0, "tfuq: validate-uq held-out subjects used by the sweeps and anomalies; 0 = all", min=0
    )
    uq_mc_samples: int = setting(
        0, "tfuq: validate-uq stochastic passes; 0 = [UNCERTAINTY] mc_samples", min=0
    )


@dataclasses.dataclass(frozen=True)
class UncertaintySection:
    """``[UNCERTAINTY]`` (tfuq): predictive family, dropout and MC sampling."""

    family: str = setting(
        "normal",
        "per-voxel predictive distribution",
        choices=("normal", "generalized_normal", "laplace", "none"),
    )
    dropout: str = setting("mc", "epistemic dropout", choices=("mc", "concrete", "none"))
    dropout_layers: str = setting(
        "head",
        "tfuq: highres3dnet/multires dropout placement: head = the input of the last 80-channel 1^3 "
        "convolution (NiftyNet, Klaser); all = also every residual-block convolution (Reinhold: all "
        "layers but the heads). unet always drops all layers but the heads; pix2pix its decoder (Zhao)",
        choices=("head", "all"),
    )
    dropout_rate: float = setting(
        0.2,
        "MC dropout drop probability (Reinhold 0.2; Klaser keep 0.5 = 0.5)",
        min=0.0,
        max=1.0,
        max_exclusive=True,
    )
    mc_samples: int = setting(20, "stochastic passes at inference (Klaser 20, Reinhold 50)", min=1)
    concrete_temperature: float = setting(
        0.1, "concrete relaxation temperature (Zhao 0.1)", min=0.0, min_exclusive=True
    )
    weight_regularizer: float = setting(1e-6, "concrete dropout weight regulariser (Zhao 1e-6)", min=0.0)
    dropout_regularizer: float = setting(1e-5, "concrete dropout regulariser (Zhao 1e-5)", min=0.0)
    concrete_init_range: tuple[float, ...] = setting(
        (0.1, 0.1),
        "initial drop probability range",
        min=0.0,
        max=1.0,
        length=2,
        min_exclusive=True,
        max_exclusive=True,
    )
    flag_threshold: float = setting(
        0.0,
        "flag a subject when its mean total std in the mask exceeds this (target units); 0 = off",
        min=0.0,
    )
    reliability: str = setting(
        "feature_distance",
        "which reliability score flags a subject (references set by tfuq calibrate on held-out "
        "subjects): feature_distance (Mahalanobis distance of the bottleneck features to the "
        "training windows; total_std for networks without one), total_std (slice means of the "
        "recalibrated std), either, or off",
        choices=("total_std", "feature_distance", "either", "off"),
    )
    ensemble: tuple[str, ...] = setting(
        (), "other model_dirs whose models join this one as a deep ensemble", path="ini"
    )


@dataclasses.dataclass(frozen=True)
class CalibrationSection:
    """``[CALIBRATION]`` (tfuq): post-hoc recalibration of the predictive distribution."""

    method: str = setting(
        "isotonic",
        "recalibration applied by infer/evaluate/export; auto = the one (none included) with the lowest "
        "leave-one-subject-out calibration error over the calibration subjects",
        choices=("isotonic", "sigma_scaling", "none", "auto"),
    )
    dataset: str = setting(
        "",
        "phase the recalibration is fitted on; empty = Calibration, else Validation; held_out = Calibration "
        "and Validation pooled (more subjects; Validation only chose checkpoints). Training only when "
        "set here (in-sample, flagged as such; Zhao used Training)",
        choices=("", *PHASES, "held_out"),
    )
    num_bins: int = setting(100, "expected-proportion grid of calibration curves", min=2)
    sigma_objective: str = setting("nll", "what sigma scaling minimises", choices=("nll", "calibration"))
    max_voxels: int = setting(1000000, "PIT values kept for fitting (random subset)", min=100)


@dataclasses.dataclass(frozen=True)
class ExportSection:
    """``[EXPORT]`` (tfuq): TF Serving SavedModel."""

    export_dir: str = setting("export", "TF Serving base folder; relative to model_dir", path="model_dir")
    model_name: str = setting("", "served model name; empty = the INI file's stem")
    mc_samples: int = setting(0, "MC passes inside the SavedModel; 0 = [UNCERTAINTY] mc_samples", min=0)


@dataclasses.dataclass(frozen=True)
class PhantomSection:
    """``[PHANTOM]`` (tfuq): the built-in paired phantom behind ``path_to_search = phantom:``."""

    kind: str = setting("wholebody", "phantom anatomy", choices=("wholebody", "brain"))
    num_subjects: int = setting(8, "subjects generated", min=1)
    seed: int = setting(0, "anatomy and noise seed", min=0)
    shape: tuple[int, ...] = setting((), "volume shape; empty = the phantom's default", min=8, length=3)
    voxel_size: tuple[float, ...] = setting(
        (), "voxel size in mm; empty = the phantom's default", min=0.0, length=3, min_exclusive=True
    )
    contrast_variability: float = setting(
        0.0,
        "log-SD of a per-subject, per-tissue factor on the MR intensities (between-subject/scanner "
        "MR contrast differences; CT numbers fixed); 0 = identical tissue intensities",
        min=0.0,
        max=1.0,
    )
    cache_dir: str = setting(
        "phantom", "where it is generated on first use; relative to model_dir", path="model_dir"
    )


@dataclasses.dataclass(frozen=True)
class RegressionSection:
    """``[REGRESSION]``: which input sections are images, target, mask."""

    image: tuple[str, ...] = setting((), "input source sections fed to the network, e.g. MR")
    output: str = setting("", "input source section of the target, e.g. CT")
    sampler: str = setting("", "optional section used by weighted/balanced window sampling")
    mask: str = setting("", "tfuq: optional section with the body/brain mask for losses and metrics")
    noise_std: str = setting("", "tfuq: optional section with the true noise std (phantom) for UQ validation")
    lesion: str = setting(
        "",
        "tfuq: optional section whose non-zero voxels are a lesion/tumour label map (never a network "
        "input); tfuq evaluate compares the uncertainty inside it with the rest of the mask",
    )
    loss_border: int = setting(0, "voxels ignored at each window side in the loss", min=0)


@dataclasses.dataclass(frozen=True)
class GanSection:
    """``[GAN]``: conditional GAN translation (pix2pix, Bayesian cGAN, UP-GAN)."""

    conditioning: tuple[str, ...] = setting(
        (), "input source sections the generator is conditioned on, e.g. T1"
    )
    image: str = setting("", "input source section of the real (target) images, e.g. T2")
    mask: str = setting("", "tfuq: optional mask section for losses and metrics")
    noise_std: str = setting("", "tfuq: optional true noise std section (phantom)")
    lesion: str = setting(
        "", "tfuq: optional lesion/tumour label section (non-zero = lesion) for evaluation, see [REGRESSION]"
    )
    loss_border: int = setting(0, "tfuq: voxels ignored at each window side in the loss", min=0)
    adversarial_loss: str = setting("lsgan", "tfuq: adversarial loss", choices=("lsgan", "bce"))
    lambda_adv: float = setting(1.0, "tfuq: adversarial loss weight", min=0.0)
    lambda_l1: float = setting(100.0, "tfuq: L1 weight (pix2pix/Zhao 100)", min=0.0)
    lambda_nll: float = setting(1.0, "tfuq: likelihood weight (UP-GAN lambda1 = 1)", min=0.0)
    lambda_kl: float = setting(100.0, "tfuq: concrete-dropout KL weight (Zhao 100)", min=0.0)
    discriminator_lr: float = setting(2e-4, "tfuq: discriminator learning rate", min=0.0, min_exclusive=True)
    phase_iter: tuple[int, ...] = setting(
        (),
        "tfuq: upgan iterations of each progressive phase (one value for every phase, or one per "
        "phase); end-to-end fine-tuning runs for the rest of [TRAINING] max_iter; empty = max_iter "
        "split evenly over the phases and the fine-tuning",
        min=1,
    )
    finetune_lr_factor: float = setting(
        0.25,
        "tfuq: upgan learning-rate factor of the end-to-end fine-tuning (Upadhyay 0.0005 / 0.002)",
        min=0.0,
        max=1.0,
        min_exclusive=True,
    )


@dataclasses.dataclass(frozen=True)
class InputSource:
    """An input source section (NiftyNet's input data specification)."""

    name: str = dataclasses.field(default="")
    csv_file: str = setting("", "subject,path CSV; used instead of searching when it exists", path="ini")
    path_to_search: tuple[str, ...] = setting(
        (), "folders searched for .nii/.nii.gz, or phantom: for the built-in phantom", path="ini"
    )
    filename_contains: tuple[str, ...] = setting(
        (), "keywords a file name must all contain; removed to form the subject id"
    )
    filename_not_contains: tuple[str, ...] = setting((), "keywords excluding a file")
    filename_removefromid: str = setting("", "regex removed from file names to form the subject id")
    interp_order: int = setting(3, "interpolation order when resampling", min=0, max=5)
    pixdim: tuple[float, ...] = setting(
        (), "resample to these voxel sizes in mm; empty = keep", min=0.0, min_exclusive=True, length=3
    )
    axcodes: tuple[str, ...] = setting(
        (), "orientation codes; empty = RAS", choices=("L", "R", "A", "P", "S", "I"), length=3
    )
    spatial_window_size: tuple[int, ...] = setting(
        (), "training window, e.g. 64, 64, 64 or 128, 128, 1", min=1, length=(2, 3)
    )
    intensity_normalisation: str = setting(
        "none", "tfuq: invertible normalisation", choices=("none", "minmax", "percentile", "zscore", "window")
    )
    cutoff: tuple[float, ...] = setting(
        (0.01, 0.99), "percentile normalisation cut-offs (fractions)", min=0.0, max=1.0, length=2
    )
    intensity_window: tuple[float, ...] = setting(
        (-1024.0, 3071.0), "window normalisation range, e.g. CT HU", length=2
    )
    normalise_foreground_only: bool = setting(
        False, "fit normalisation inside the foreground (mask section or > minimum)"
    )
    target_normalisation: str = setting(
        "pooled",
        "target section only: pooled = one map fitted on the training subjects, maps in the "
        "target's units (HU); per_subject = each subject's target normalised by its own statistics "
        "(MR in arbitrary units), maps in normalised units",
        choices=("pooled", "per_subject"),
    )


#: Reserved section name -> dataclass, in the order they are rendered.
SECTIONS: dict[str, type] = {
    "SYSTEM": SystemSection,
    "NETWORK": NetworkSection,
    "TRAINING": TrainingSection,
    "INFERENCE": InferenceSection,
    "EVALUATION": EvaluationSection,
    "UNCERTAINTY": UncertaintySection,
    "CALIBRATION": CalibrationSection,
    "EXPORT": ExportSection,
    "PHANTOM": PhantomSection,
}
#: Application section name -> dataclass; a config has exactly one.
APPLICATIONS: dict[str, type] = {"REGRESSION": RegressionSection, "GAN": GanSection}
