"""The ``tfuq`` command line: thin wrappers that parse, then call the library.

TensorFlow, Keras and the data stack are imported inside commands, so
``tfuq --help`` answers quickly. A user error (bad config, missing file, bad
data, a bad option) is one line on stderr and exit code 2; ``--debug`` shows
the traceback. The log file of a refused command is removed when the command
wrote nothing else (:func:`tfuq.log.close_refused_log`). A command whose
implementation has not landed yet exits 2 and says so.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from tfuq import __version__
from tfuq.console import quiet_native_stderr, quiet_python_loggers
from tfuq.errors import UserError

if TYPE_CHECKING:
    from tfuq.export.client import Transport

__all__ = ["cli", "main"]

_CONFIG = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
_SET = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.key=value",
    help="Override a config value (repeatable), e.g. --set TRAINING.max_iter=50.",
)


def _load(config: Path, overrides: Sequence[str], *, log_to_model_dir: bool = True) -> Any:
    """Load the config and start logging to the console and ``<model_dir>/logs/``."""
    from tfuq.config import load_config
    from tfuq.log import setup_logging

    command = click.get_current_context().info_name or "tfuq"
    setup_logging(command, verbose=_verbose())  # the console first: the config's NiftyNet mappings are logged
    cfg = load_config(config, overrides)
    setup_logging(command, cfg.model_dir if log_to_model_dir else None, verbose=_verbose())
    return cfg


def _verbose() -> bool:
    """Whether ``-v`` / ``--verbose`` or ``--debug`` was given before the command."""
    root = click.get_current_context().find_root().params or {}
    return bool(root.get("verbose") or root.get("debug"))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors (implies --verbose).")
@click.option("-v", "--verbose", is_flag=True, help="Debug-level log and TensorFlow's own start-up lines.")
@click.version_option(__version__, prog_name="tfuq")
def cli(debug: bool, verbose: bool) -> None:
    """Uncertainty-aware medical image translation (Keras 3 / TensorFlow / TFP).

    Typical use: tfuq train app.ini; tfuq calibrate app.ini; tfuq infer app.ini;
    tfuq evaluate app.ini. `tfuq phantom OUT` writes paired phantom data with
    known noise; `make demo` runs the whole MR->CT job on it.
    """


@cli.command()
@_CONFIG
@_SET
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh: move the model already in model_dir into model_dir/replaced-<timestamp>/ "
    "(nothing is deleted) instead of continuing it.",
)
def train(config: Path, overrides: tuple[str, ...], overwrite: bool) -> None:
    """Train the model described by CONFIG (resumes from the last checkpoint).

    A model_dir holding a trained model keeps the configuration it was trained
    with: a run that changes the model or its data is refused (use --overwrite
    or another model_dir); longer training, other checkpoint, log and
    validation periods are fine. One train at a time writes to a model_dir.
    """
    from tfuq.stages.train import train as run

    run(_load(config, overrides), overwrite=overwrite)


@cli.command()
@click.argument("source", metavar="CONFIG_OR_MODEL_DIR", type=click.Path(path_type=Path))
@_SET
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="SECTION=FILE",
    help="One scan of one subject per input section, e.g. --image T1=scan.nii.gz (repeatable).",
)
@click.option(
    "--input-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A folder of subjects, matched by the model's filename_contains.",
)
@click.option(
    "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where maps go."
)
@click.option("--subject", default=None, help="Output name with --image (default: from the file name).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace maps that already exist.")
@click.option("--serving-url", default=None, help="Query a TF Serving REST endpoint instead.")
@click.pass_context
def infer(
    ctx: click.Context,
    source: Path,
    overrides: tuple[str, ...],
    images: tuple[str, ...],
    input_dir: Path | None,
    output_dir: Path | None,
    subject: str | None,
    overwrite: bool | None,
    serving_url: str | None,
) -> None:
    """Write mean and uncertainty maps: CONFIG's inference subjects, or your own scans.

    CONFIG_OR_MODEL_DIR is a config file or a model_dir written by tfuq train
    (its stored config is used: normalisation, window, calibration, QC).
    Your scans: tfuq infer MODEL_DIR --image T1=scan.nii.gz --output-dir out/
    """
    from tfuq.inference.scans import image_subject, model_config

    if (images or input_dir) and output_dir is None:
        raise UserError("--image / --input-dir need --output-dir (the folder the maps are written to)")
    if images and input_dir:
        raise UserError("give --image (one subject) or --input-dir (a folder of subjects), not both")
    if subject is not None and not images:
        raise UserError("--subject names the output of --image; give --image too")
    from tfuq.log import setup_logging

    setup_logging("infer", verbose=_verbose())
    cfg = model_config(source, overrides, output_dir=output_dir, overwrite=overwrite, input_dir=input_dir)
    setup_logging("infer", cfg.model_dir, verbose=_verbose())
    if serving_url is None:
        from tfuq.stages.infer import run_inference

        files = None
        if images:
            name, subject_files = image_subject(cfg, images, subject)
            files = {name: subject_files}
        result = run_inference(cfg, files=files)
        flagged = sum(bool(q.get("flagged")) for q in result.qc.values())
        click.echo(
            f"infer: {len(result.qc)} subject(s) written to {result.out_dir}"
            + (f"; {flagged} flagged as unreliable" if flagged else "; none flagged")
        )
        return
    if images:
        raise UserError("--image with --serving-url is not supported; use --input-dir")
    from tfuq.data.sources import resolve_sources
    from tfuq.export.client import ServingClient
    from tfuq.export.remote_inference import serve_subject
    from tfuq.model_store import read_target_normalisation
    from tfuq.stages.infer import inference_subjects, open_output_folder

    open_output_folder(cfg)
    transport = (ctx.obj or {}).get("serving_transport")  # see main(serving_transport=...)
    client = ServingClient(serving_url, cfg.export.model_name, transport=transport)
    sources = resolve_sources(cfg)
    units = read_target_normalisation(cfg.model_dir)
    for subject_id, files in inference_subjects(cfg, sources).items():
        serve_subject(
            client, cfg, subject_id, files, units=units, sources=sources, overwrite=cfg.inference.overwrite
        )
        click.echo(f"{subject_id}: served by {serving_url}")


@cli.command()
@_CONFIG
@_SET
def calibrate(config: Path, overrides: tuple[str, ...]) -> None:
    """Fit the recalibration of the predictive distribution on the calibration split."""
    from tfuq.stages.calibrate import calibrate as run

    run(_load(config, overrides))


@cli.command()
@_CONFIG
@_SET
def evaluate(config: Path, overrides: tuple[str, ...]) -> None:
    """Compute image and uncertainty metrics, plots and the HTML report."""
    from tfuq.stages.demo import headline
    from tfuq.stages.evaluate import run_evaluation

    summary = run_evaluation(_load(config, overrides))
    click.echo(f"evaluate: report {summary.get('paths', {}).get('html')}; {headline(summary)}")


@cli.command("validate-uq")
@_CONFIG
@_SET
def validate_uq(config: Path, overrides: tuple[str, ...]) -> None:
    """Run the papers' uncertainty-validation experiments (noise, size, anomaly)."""
    from tfuq.experiments.validate_uq import validate_uq as run

    run(_load(config, overrides))


@cli.command("shift-check")
@_CONFIG
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@_SET
@click.option("--subject", "subjects", multiple=True, help="Subject to shift (default: the Inference ones).")
@click.option(
    "--swap", "swaps", multiple=True, metavar="NAME=KEYWORD", help="Another contrast in place of the input."
)
@click.option(
    "--external", "external", multiple=True, metavar="ID=FILE", help="An input from elsewhere, as it is."
)
def shift_check(
    config: Path,
    out_dir: Path,
    overrides: tuple[str, ...],
    subjects: tuple[str, ...],
    swaps: tuple[str, ...],
    external: tuple[str, ...],
) -> None:
    """Infer shifted versions of held-out scans into OUT_DIR: does the reliability flag fire?

    Shifts: a strong bias field, 3x noise, a 30 % rescale, and each --swap (e.g. flair=_flair:
    the subject's FLAIR given as the input); --external adds a scan from another site.
    """
    from tfuq.experiments.shift_check import run_shift_check

    _load(config, overrides, log_to_model_dir=False)
    pairs = {}
    for item in (*swaps, *external):
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UserError(f"--swap / --external: expected NAME=VALUE, got {item!r}")
        pairs[item] = (name, value)
    summary = run_shift_check(
        config,
        out_dir,
        overrides=overrides,
        subjects=subjects,
        swaps=dict(pairs[i] for i in swaps),
        external={name: Path(value) for name, value in (pairs[i] for i in external)},
    )
    click.echo(
        f"shift-check: {summary['shifted_flagged']} shifted case(s) flagged, "
        f"{summary['external_flagged']} external, {summary['clean_flagged']} clean; "
        f"AUROC {summary['auroc']}; {out_dir / 'shift_check.json'}"
    )


@cli.command()
@_CONFIG
@_SET
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="Model version.")
@click.option("--overwrite", is_flag=True, help="Replace an existing version.")
def export(config: Path, overrides: tuple[str, ...], version: int | None, overwrite: bool) -> None:
    """Export a TF Serving SavedModel with in-graph MC uncertainty."""
    from tfuq.stages.export import export as export_job

    path = export_job(_load(config, overrides), version=version, overwrite=overwrite)
    click.echo(f"exported {path}")


@cli.command("import-keras")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--head", type=click.Choice(["normal", "generalized_normal", "laplace"]), default="normal")
@click.option("--dropout", type=click.Choice(["mc", "concrete", "none"]), default="mc")
@click.option(
    "--rate",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Drop probability (the initial one for concrete dropout).",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Base seed of the dropout layers.")
@click.option("--overwrite", is_flag=True, help="Replace DESTINATION if it exists.")
def import_keras(
    source: Path, destination: Path, head: str, dropout: str, rate: float, seed: int | None, overwrite: bool
) -> None:
    """Turn a deterministic Keras image-to-image model into an uncertainty-aware one.

    SOURCE and DESTINATION are .keras files (load the result with tfuq.load_model).
    """
    from tfuq.atomic import atomic_path
    from tfuq.export.keras_import import import_keras as convert

    if destination.suffix != ".keras":
        raise UserError(f"{destination}: expected a .keras destination file")
    if destination.exists() and not overwrite:  # before the conversion, not after it
        raise UserError(f"{destination}: already exists; refusing to overwrite it (pass --overwrite).")
    model = convert(source, head=head, dropout=dropout, rate=rate, seed=seed)
    with atomic_path(destination, overwrite=overwrite) as tmp:
        model.save(tmp)
    click.echo(f"wrote {destination}: {head} head, {dropout} dropout, {model.count_params()} parameters")


@cli.command()
@click.argument("what", type=click.Choice(["network", "infer", "train"]))
@_CONFIG
@_SET
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Windows per forward call.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--shape", default="96,96,96", show_default=True, help="infer: volume shape X,Y,Z.")
@click.option("--samples", default="1,20", show_default=True, help="infer: the T values, comma-separated.")
@click.option(
    "--steps", type=click.IntRange(min=1), default=20, show_default=True, help="train: steps per round."
)
def bench(
    what: str,
    config: Path,
    overrides: tuple[str, ...],
    batch: int | None,
    repeats: int,
    shape: str,
    samples: str,
    steps: int,
) -> None:
    """Benchmark WHAT, as ratios measured in the same run.

    network: the configured network's forward pass on its window, as achieved
    GFLOP/s over the fp32 matmul peak, the cost of an MC-dropout pass, of T MC
    passes of one window group and the bfloat16 speed-up.
    infer: whole-volume MC inference of a random volume per T (fresh process
    each): time and peak RSS, as ratios to the first T.
    train: training steps fed by the real tf.data pipeline against steps on
    one cached batch (best of --repeats rounds of --steps steps), their rate
    ratio and the peak RSS.
    """
    from tfuq.bench import bench_infer, bench_network, infer_lines

    cfg = _load(config, overrides, log_to_model_dir=False)
    if what == "train":
        from tfuq.bench.train import bench_train

        for line in bench_train(cfg, steps=steps, repeats=repeats).lines():
            click.echo(line)
        return
    if what == "network":
        for line in bench_network(cfg, batch=batch, repeats=repeats).lines():
            click.echo(line)
        return
    try:
        dims = [int(v) for v in shape.split(",")]
        ts = [int(v) for v in samples.split(",")]
    except ValueError:
        raise UserError(
            f"--shape / --samples: expected comma-separated integers, got {shape!r} / {samples!r}"
        ) from None
    if len(dims) != 3 or min(dims) < 1 or not ts or min(ts) < 1:
        raise UserError(
            f"--shape X,Y,Z and --samples T1,T2,...: positive integers; got {shape!r} / {samples!r}"
        )
    for line in infer_lines(bench_infer(config, overrides, dims, ts), dims):
        click.echo(line)


@cli.command()
@_CONFIG
@_SET
def info(config: Path, overrides: tuple[str, ...]) -> None:
    """Print the resolved configuration, the subjects found and the model summary."""
    from tfuq.stages.info import describe, model_summary

    cfg = _load(config, overrides, log_to_model_dir=False)
    click.echo(describe(cfg))
    click.echo(model_summary(cfg))


@cli.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["wholebody", "brain"]), default="wholebody", show_default=True)
@click.option("--subjects", "num_subjects", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--shape", type=click.IntRange(min=8), nargs=3, default=None, help="Volume shape X Y Z.")
@click.option("--voxel-size", type=click.FloatRange(min=0, min_open=True), nargs=3, default=None)
@click.option("--anomaly", type=click.Choice(["cube", "lesion"]), default=None, help="Insert an anomaly.")
@click.option("--anomaly-size", type=click.IntRange(min=1), default=None, help="Anomaly side in voxels.")
@click.option(
    "--contrast-variability",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    help="Log-SD of per-subject, per-tissue MR intensity factors.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing phantom files.")
def phantom(
    outdir: Path,
    kind: str,
    num_subjects: int,
    seed: int,
    shape: tuple[int, int, int] | None,
    voxel_size: tuple[float, float, float] | None,
    anomaly: str | None,
    anomaly_size: int | None,
    contrast_variability: float,
    overwrite: bool,
) -> None:
    """Write paired phantom volumes with their true noise std to OUTDIR."""
    from tfuq.data.phantom import write_phantom

    kwargs: dict[str, Any] = {"kind": kind, "num_subjects": num_subjects, "seed": seed}
    if shape:
        kwargs["shape"] = tuple(shape)
    if voxel_size:
        kwargs["voxel_size"] = tuple(voxel_size)
    if anomaly:
        kwargs["anomaly"] = anomaly
    if anomaly_size:
        kwargs["anomaly_size"] = anomaly_size
    if contrast_variability:
        kwargs["contrast_variability"] = contrast_variability
    bars: list[Any] = []  # shown once the first subject is written: a refused run prints only its error

    def progress(done: int) -> None:
        if not bars:
            bars.append(click.progressbar(length=num_subjects, label=f"{kind} phantom", file=sys.stderr))
            bars[0].__enter__()
        bars[0].update(done)

    try:
        paths = write_phantom(outdir, overwrite=overwrite, progress=progress, **kwargs)
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
    click.echo(f"wrote {len(paths)} files for {num_subjects} {kind} subjects to {outdir}")


@cli.command()
@_CONFIG
@_SET
def demo(config: Path, overrides: tuple[str, ...]) -> None:
    """Run CONFIG's whole job on the built-in phantom (what `make demo` runs)."""
    from tfuq.stages.demo import run_demo

    run_demo(_load(config, overrides), echo=click.echo)


def main(argv: Sequence[str] | None = None, *, serving_transport: Transport | None = None) -> None:
    """Console entry point: maps user errors to one line and exit code 2.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.
        serving_transport: How ``tfuq infer --serving-url`` sends its requests
            (a :data:`tfuq.export.client.Transport`), e.g.
            :func:`tfuq.export.client.saved_model_transport` to answer them in
            process from a SavedModel; default None: HTTP to the URL.

    Raises:
        SystemExit: always, with 0 on success, 2 for a user error.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    verbose = debug or bool({"-v", "--verbose"} & set(args))
    quiet_python_loggers(verbose)
    if verbose:
        _main(args, debug, serving_transport)
    with quiet_native_stderr():
        _main(args, debug, serving_transport)


def _main(args: list[str], debug: bool, serving_transport: Transport | None) -> NoReturn:
    try:
        cli.main(
            args=args, prog_name="tfuq", standalone_mode=False, obj={"serving_transport": serving_transport}
        )
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.Abort:
        click.echo("tfuq: aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "tfuq"
        click.echo(
            f"tfuq: error: {_one_line(err.format_message()).rstrip('.')}; see '{where} --help'", err=True
        )
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"tfuq: error: {_one_line(err.format_message())}", err=True)
        sys.exit(2)
    except UserError as err:
        from tfuq.log import close_refused_log

        if debug:
            traceback.print_exc()
        message = _one_line(str(err))
        close_refused_log(message)  # a refused command leaves no log behind when it wrote nothing else
        click.echo(f"tfuq: error: {message}", err=True)
        sys.exit(2)
    sys.exit(0)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


if __name__ == "__main__":  # pragma: no cover
    main()
