"""The ``maskfactory`` command. Sub-commands call into flows, simulators and the review service;
each stays a thin shell around library functions so they can be tested without the CLI."""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.file_proxy import FileProxy
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="maskfactory: batch labelling for segmentation datasets.",
    no_args_is_help=True,
    add_completion=False,
)
table_app = typer.Typer(help="Inspect Delta or Parquet tables on local disk or S3.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
world_app = typer.Typer(help="The synthetic world: labelled images and videos with exact ground truth.")
zoo_app = typer.Typer(help="The bundled tiny models: train them on the world, evaluate them.")
app.add_typer(table_app, name="table")
app.add_typer(models_app, name="models")
app.add_typer(world_app, name="world", no_args_is_help=True)
policy_app = typer.Typer(help="AlignSAM prompting agents: train one per task, evaluate them.")
app.add_typer(zoo_app, name="zoo", no_args_is_help=True)
app.add_typer(policy_app, name="policy", no_args_is_help=True)

console = Console()


@table_app.command("show")
def table_show(
    uri: str = typer.Argument(..., help="Table URI: a Delta table folder or a Parquet file/folder."),
    rows: int = typer.Option(5, "--rows", "-n", min=0, help="How many first rows to print."),
) -> None:
    """Row count, schema and first rows of a table."""
    from maskfactory.infra.inspect import describe_table  # heavy imports only for this command

    try:
        info = describe_table(uri, rows)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    version = "" if info.version is None else f", version {info.version}"
    console.print(f"[bold]{info.uri}[/bold]  ({info.format}{version})")
    console.print(f"rows: {info.num_rows}")
    schema = Table("column", "type", title="schema", title_justify="left")
    for field in info.schema:
        schema.add_row(field.name, str(field.type))
    console.print(schema)
    if rows:
        console.print(info.head.to_string(max_colwidth=40) if len(info.head) else "(no rows)")


@models_app.command("list")
def models_list() -> None:
    """Registered models and their default checkpoints."""
    from maskfactory.models.registry import REGISTRY

    out = Table("name", "family", "default checkpoint", "note")
    for spec in REGISTRY.values():
        out.add_row(spec.name, spec.family, spec.default_checkpoint or "(pass a URI)", spec.note)
    console.print(out)


@app.callback()
def offline() -> None:
    """maskfactory: batch labelling for segmentation datasets."""
    # No usage statistics from a Prefect server the flows start or from Ray: maskfactory runs
    # without network. An explicit setting in the environment wins. Prefect and Ray are imported by
    # the commands, after this.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Prefect waits 20 s for the temporary API server a flow starts when no PREFECT_API_URL is set;
    # on a busy 2-core machine (seen while the test suite ran beside it) that start takes longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def _bars() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=False)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(n)``."""
    with _bars() as bars:
        task = bars.add_task(description, total=total)
        yield lambda n: bars.advance(task, n)


@contextmanager
def labelling_progress_bar(description: str) -> Iterator[None]:
    """A progress bar over the items that label flows run in this process label. It appears when
    labelling starts, because only then is the number of items to label known."""
    from maskfactory.tasks.labelling import progress_listener

    with _bars() as bars:
        task = bars.add_task(description, total=None, visible=False)
        logs = _LogsAboveBars(bars.console)

        def show(done: int, total: int) -> None:
            logs.catch()
            bars.update(task, completed=done, total=total, visible=True)

        try:
            with progress_listener(show):
                yield
        finally:
            logs.release()


class _PrintAbove(FileProxy):
    """rich's ``FileProxy`` (whole lines printed through ``console``, above its live bars), which other
    rich Consoles do not see through: a Console unwraps a ``FileProxy`` it is given to reach the
    real file, and Prefect's log handler prints with a Console of its own."""

    @property
    def rich_proxied_file(self) -> FileProxy:
        return self


class _LogsAboveBars:
    """Sends log handlers that write to ``console``'s stream through ``console`` while a bar is live.

    Prefect's and Ray's handlers keep the stderr they were made with, so their lines would be drawn
    into the bar; through rich's ``FileProxy`` they print above it instead. Prefect makes new
    handlers when a flow starts its temporary server, so ``catch`` runs again on every update.
    """

    def __init__(self, console: Console) -> None:
        self.stream = console.file
        self.proxy = _PrintAbove(console, self.stream)
        self.moved: list[logging.StreamHandler] = []

    def catch(self) -> None:
        loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", ()):  # placeholders have no handlers
                if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                    self._point(handler, self.proxy)
                    self.moved.append(handler)

    def release(self) -> None:
        for handler in self.moved:
            self._point(handler, self.stream)

    @staticmethod
    def _point(handler: logging.StreamHandler, stream: object) -> None:
        handler.setStream(stream)
        if isinstance(getattr(handler, "console", None), Console):  # Prefect's handler prints with rich
            handler.console.file = stream


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad arguments and missing inputs end in a red message and exit status 2, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


@world_app.command("make")
def world_make(
    out: str = typer.Option(..., help="Output folder: a local path or s3:// URI."),
    task: str = typer.Option("semantic", help="semantic, saliency, shadow, blur or glass (images only)."),
    domain: str = typer.Option("natural", help="natural, aerial or medical."),
    n: int = typer.Option(200, min=1, help="How many images (or videos with --video)."),
    seed: int = typer.Option(0, help="Dataset seed; different seeds never share an item."),
    objects: int | None = typer.Option(None, min=1, help="Objects per image (default: the generator's)."),
    video: bool = typer.Option(False, "--video", help="Write videos (frame folders) instead of images."),
) -> None:
    """Write a labelled synthetic dataset: PNG images, PNG masks and manifest.parquet."""
    from maskfactory.simulators import datasets

    # The manifest records how it was made: this command, rebuilt from its options (not from
    # sys.argv, which is someone else's when the app is called in-process).
    what = ["--video"] if video else ["--task", task]
    options = [*what, "--domain", domain, "--n", str(n), "--seed", str(seed)]
    options += ["--objects", str(objects)] if objects is not None else []
    command = shlex.join(["maskfactory", "world", "make", *options, "--out", out])
    with progress_bar(f"{'videos' if video else task} ({domain})", n) as advance:
        if video:
            manifest = datasets.write_videos(out, domain, n, seed, progress=advance, made_by=command)
        else:
            manifest = datasets.write_dataset(
                out, task, domain, n, seed, n_objects=objects, progress=advance, made_by=command
            )
    console.print(f"wrote {n} {'videos' if video else 'images'}; manifest: {manifest}")


@zoo_app.command("train")
def zoo_train(
    name: str = typer.Argument(..., help="tiny-sam or tiny-clip."),
    out: str | None = typer.Option(None, help="Checkpoint URI (default: the zoo folder in the package)."),
    seed: int = typer.Option(0, help="Seed of the data and of training."),
    steps: int | None = typer.Option(None, min=1, help="Training steps (default: the recipe's)."),
    pool: int | None = typer.Option(None, min=1, help="Training images generated up front."),
    stop_after: int | None = typer.Option(
        None,
        min=1,
        help="End after this many steps, schedule unchanged, with no time limit: replays a run "
        "on a machine of another speed (the checkpoint header's training.steps_run).",
    ),
    zoom_leg: int | None = typer.Option(
        None,
        min=0,
        help="tiny-sam: then this many steps with zoom crops in half the images (default 600, as "
        "the shipped run; 0: none). Within the time limit left; whole with --stop-after.",
    ),
    zoom_leg_corrections: int | None = typer.Option(
        None,
        min=0,
        help="tiny-sam: corrective clicks per prompt set in the zoom leg (default 6, as the shipped "
        "run 9; run 5 had 2).",
    ),
    zoom_leg_ema: float | None = typer.Option(
        None,
        help="tiny-sam: return the zoom leg's weights averaged with this decay, in (0, 1), or 0 for "
        "the last step's weights (default 0.995, as the shipped run 9; run 5 had 0).",
    ),
) -> None:
    """Train a zoo model from scratch on the synthetic world (seeded, reproducible)."""
    from maskfactory.tasks.zoo import train_zoo_model

    def log(row: dict[str, float]) -> None:
        console.print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )

    if zoom_leg and name != "tiny-sam":
        raise typer.BadParameter("--zoom-leg trains tiny-sam only")
    with user_errors():
        uri, version, summary = train_zoo_model(
            name,
            out,
            seed,
            pool,
            steps,
            log=log,
            stop_after=stop_after,
            zoom_leg=zoom_leg,
            leg_corrections=zoom_leg_corrections,
            leg_ema_decay=zoom_leg_ema,
        )
    ran = f"{summary['steps_run']} of {summary['steps']} steps in {summary['train_seconds']:.0f} s"
    if "zoom_leg" in summary:
        leg = summary["zoom_leg"]
        ran += f", then {leg['steps_run']} of {leg['steps']} zoom-leg steps in {leg['train_seconds']:.0f} s"
    console.print(f"{name} {version}: {uri} ({ran})")


@zoo_app.command("eval")
def zoo_eval(
    name: str = typer.Argument(..., help="tiny-sam or tiny-clip."),
    data: str = typer.Option(..., help="A world dataset folder (from `maskfactory world make`)."),
    checkpoint: str | None = typer.Option(None, help="Checkpoint URI (default: the zoo's)."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate only the first N images."),
    max_clicks: int = typer.Option(20, min=1, help="Click budget per object (tiny-sam)."),
    zoom_in: bool = typer.Option(
        False, "--zoom-in", help="tiny-sam: answer clicks in a crop around the object (Zoom-In)."
    ),
    refine: bool = typer.Option(
        False, "--refine", help="tiny-sam: refine each answer's edge along the image's (guided filter)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """tiny-sam: mIoU after one click, NoC@85, NoC@90. tiny-clip: zero-shot top-1 on single-object images."""
    from maskfactory.models.interactive import ZoomIn
    from maskfactory.models.refine import GuidedRefinement
    from maskfactory.simulators.datasets import read_manifest
    from maskfactory.tasks import zoo

    if name == "tiny-sam":
        total = min(limit or 10**9, read_manifest(data).num_rows)
        with progress_bar("NoC", total) as advance:
            result = zoo.evaluate_tiny_sam(
                data,
                checkpoint,
                max_clicks,
                limit,
                progress=advance,
                zoom_in=ZoomIn() if zoom_in else None,
                refine=GuidedRefinement() if refine else None,
            )
    elif name == "tiny-clip":
        result = zoo.evaluate_tiny_clip(data, checkpoint, limit)
    else:
        raise typer.BadParameter(f"unknown zoo model {name!r}; known: {', '.join(zoo.ZOO_MODELS)}")
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(result)


@policy_app.command("train")
def policy_train(
    task: str = typer.Option(..., help="semantic, saliency, shadow, blur or glass."),
    data: str = typer.Option(..., help="A labelled dataset folder (from `maskfactory world make`)."),
    out: str = typer.Option(..., help="Checkpoint URI to write (local path or s3://)."),
    shots: int = typer.Option(50, min=1, help="Training images (the rest: up to 20 for validation)."),
    seed: int = typer.Option(0, help="Seed of the few-shot split and of training."),
    branch: str | None = typer.Option(None, help="SRM branch, implicit or explicit (default: the task's)."),
    episodes: int = typer.Option(50, min=1, help="Passes over the few-shot set (the paper's 50)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train an AlignSAM agent (policy and SRM) for one task on a few-shot set."""
    from maskfactory.tasks.policy import train_policy

    with user_errors(), progress_bar(f"AlignSAM {task} episodes", episodes) as advance:
        uri, version, summary = train_policy(
            task,
            data,
            out,
            shots=shots,
            seed=seed,
            branch=branch,
            log=lambda row: advance(1),
            episodes=episodes,
        )
    if as_json:
        print(json.dumps({"uri": uri, "version": version, **summary}, indent=2))
    else:
        console.print(f"AlignSAM {task} {version}: {uri}")
        console.print({"validation": summary["validation"]})


@policy_app.command("eval")
def policy_eval(
    task: str = typer.Option(..., help="semantic, saliency, shadow, blur or glass."),
    data: str = typer.Option(..., help="A labelled dataset folder, held out from training."),
    policy: str | None = typer.Option(None, help="Agent checkpoint URI (default: the zoo's for the task)."),
    ablation: str = typer.Option("full", help="full, no-rl, no-srm or single-step."),
    shots: int | None = typer.Option(None, min=1, help="Refuse an agent trained with another shot count."),
    steps: int | None = typer.Option(None, min=0, help="Prompting steps T (default: the agent's)."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate only the task's first N items."),
    seed: int = typer.Option(0, help="Seed of the random actions of no-rl."),
    refine: bool = typer.Option(
        False, "--refine", help="Score the final masks refined along the image's edges (guided filter)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """mIoU, MAE, BER, F-beta, E-measure and the foreground rate of an agent on a task's items."""
    from maskfactory.models.refine import GuidedRefinement
    from maskfactory.tasks.policy import evaluate_policy

    with user_errors():
        result = evaluate_policy(
            task,
            data,
            policy,
            ablation,
            shots,
            steps,
            limit,
            seed,
            refine=GuidedRefinement() if refine else None,
        )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(result)


@policy_app.command("calibrate")
def policy_calibrate(
    task: str = typer.Option(..., help="semantic, saliency, shadow, blur or glass."),
    data: str = typer.Option(..., help="A labelled dataset folder the agent was not trained on."),
    policy: str = typer.Option(..., help="Agent checkpoint URI to refit."),
    out: str | None = typer.Option(None, help="Where to write the refitted agent (default: in place)."),
    limit: int | None = typer.Option(None, min=1, help="Fit on the task's first N items only."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit as JSON."),
) -> None:
    """Refit an agent's routing confidence (P(IoU >= 0.85)) on labelled items; weights are unchanged."""
    from maskfactory.tasks.policy import calibrate_policy

    with user_errors():
        result = calibrate_policy(task, data, policy, limit, out)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(
            f"{result['policy']}: fitted on {result['items']} items, {result['good_share']:.0%} good; "
            f"calibration error on them {result['calibration_error']:.3f}"
        )


@app.command("label")
def label(
    source: str = typer.Option(
        ..., help="Images: a folder or prefix (local or s3://), or a manifest .parquet."
    ),
    task: str = typer.Option(..., help="semantic, saliency, shadow, blur or glass."),
    output: str | None = typer.Option(None, help="Table root (default: MASKFACTORY_STORAGE_ROOT)."),
    policy: str | None = typer.Option(None, help="Agent checkpoint URI (default: the zoo's for the task)."),
    review_threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Confidence below this: review."),
    batch_size: int = typer.Option(16, min=1, help="Images per actor call and per table commit."),
    num_actors: int = typer.Option(1, min=1, help="Ray actors labelling in parallel."),
    gpus_per_actor: float = typer.Option(0.0, min=0.0, help="GPUs each actor asks Ray for."),
    limit: int | None = typer.Option(None, min=1, help="Label only the source's first N items."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Run the label-dataset flow in this process (the deployment runs the same flow)."""
    from maskfactory.flows.label_dataset import label_dataset

    with user_errors(), labelling_progress_bar(f"labelling {task}"):
        summary = label_dataset(
            source, task, output, policy, review_threshold, batch_size, num_actors, gpus_per_actor, limit
        )
    print(json.dumps(summary, indent=2) if as_json else summary)


@app.command("demo")
def demo(
    out: str = typer.Option("./maskfactory-demo", help="Where the generated images and the tables go."),
    n: int = typer.Option(40, min=1, help="Synthetic images to generate (6 broken files are added)."),
    num_actors: int = typer.Option(1, min=1, help="Ray actors labelling in parallel."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """The main job on the embedded default: generate images, label them through Prefect and Ray with
    the bundled models, print what happened. No network, no GPU."""
    from maskfactory.tasks.demo import run_demo

    with labelling_progress_bar("labelling the demo set"):
        result = run_demo(out, n=n, num_actors=num_actors)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    quality = result["quality"]
    summary = Table(
        "items", "this run", "in table", "mIoU vs truth", title=f"label-dataset {result['task']} (demo)"
    )
    for status in ("auto_accepted", "needs_review"):
        q = quality.get(status, {"items": 0, "mIoU": float("nan")})
        summary.add_row(status, str(result[status]), str(q["items"]), f"{q['mIoU']:.3f}")
    summary.add_row("error (broken files)", str(result["errors"]), "", "")
    summary.add_row("skipped (labelled before)", str(result["skipped"]), "", "")
    console.print(summary)
    console.print(f"throughput: {result['items_per_s']:.2f} images/s over {result['duration_s']:.1f} s")
    console.print(f"tables: {result['tables']['labels']} and {result['tables']['runs']}")
    console.print(f"inspect: maskfactory table show {result['tables']['labels']}")


@app.command("serve")
def serve(
    file: str | None = typer.Option(None, help="A prefect.yaml (default: the repository's)."),
) -> None:
    """Serve the deployments of prefect.yaml (label-dataset/default, nightly-relabel/default) from this
    process; `prefect deployment run label-dataset/default --param ...` then runs here."""
    from prefect import serve as prefect_serve

    from maskfactory.infra.deployments import DEFAULT_FILE, load_deployments

    prefect_serve(*load_deployments(file or DEFAULT_FILE))
