"""Web app: upload an image or a clip → verdict, P(fake), per-frame scores, heat maps; flag it.

    python -m experiments.app                     # the packaged model
    python -m experiments.app model=outputs/triplet_rf/<run>/model.skops
    python -m experiments.app model=... port=7860 db=sqlite:///reports.db max_mb=100 \\
        keep_uploads=uploads/ method=gradcam layer=repeat_3 explain_frames=3

Options (``key=value``; ``python -m experiments.app --help`` lists them):

``model``           a ``model.skops`` from ``python -m experiments.run`` (data: a file
                    naming types deepmetric does not trust is refused). Default: the
                    model packaged with deepmetric (``deepmetric info`` prints its card).
``trust_pickle``    ``true`` also loads a ``model.joblib`` of earlier deepmetric versions, a pickle,
                    which runs any code it holds: only for files you trust (default false).
``port``            port on ``host`` (default 7860; 0 picks a free one).
``host``            interface to listen on (default 127.0.0.1, this machine only).
``db``              reports database: a SQLAlchemy URL (``postgresql+psycopg://u@h/db``) or
                    a SQLite file path (default ``reports.db`` in deepmetric's data folder:
                    ``$DEEPMETRIC_DATA``, else ``~/.local/share/deepmetric``).
``max_mb``          largest upload accepted, in MiB (default 100).
``keep_uploads``    a folder to keep each file the model scored in, named ``<sha256><ext>``
                    (a file it could not score is never kept); empty (default): uploads
                    are deleted as soon as they are analysed.
``method``          ``gradcam`` (default), ``gradcam++`` or ``ig`` (slow on CPU).
``layer``           FaceNet block for Grad-CAM (default ``repeat_3``).
``explain_frames``  frames explained per file (default 3; 0 turns heat maps off).

Privacy: the app never writes a user's file name to disk or to the database; a report keeps
the file's SHA-256, the score, the model version, the label, the comment and the UTC time.
Gradio's own copies of uploads and of the images it serves live in a private temporary
folder that is removed when the app stops (outputs older than 10 minutes are purged while
it runs).
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deepmetric.datasets.items import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from experiments.app_figures import Analysis, gallery_items, score_figure
from experiments.reports import LABELS

log = logging.getLogger("deepmetric.app")

#: Extensions the app accepts (lower case, with the dot).
SUPPORTED = tuple(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
#: ``key=value`` options and their defaults (the type of the default is the option's type).
DEFAULTS: dict[str, Any] = {
    "model": "", "port": 7860, "host": "127.0.0.1", "db": "", "max_mb": 100.0,
    "keep_uploads": "", "method": "gradcam", "layer": "repeat_3", "explain_frames": 3,
    "trust_pickle": False,
}
CSS = "#verdict {min-height: 4em} footer {display: none !important}"


class DetectorApp:
    """The app's logic, independent of the web UI (the tests drive it directly).

    Parameters
    ----------
    model : DeepfakeModel
    store : experiments.reports.ReportStore
    max_mb : float
        Largest file accepted, in MiB.
    keep_uploads : path-like, optional
        Keep analysed files there as ``<sha256><ext>``.
    method, layer, explain_frames
        Heat maps (see :mod:`deepmetric.explain`); ``explain_frames=0`` disables them.
    """

    def __init__(self, model: Any, store: Any, max_mb: float = 100.0,
                 keep_uploads: str | os.PathLike | None = None, method: str = "gradcam",
                 layer: str = "repeat_3", explain_frames: int = 3):
        from deepmetric.explain import METHODS

        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not max_mb > 0:
            raise ValueError(f"max_mb must be > 0, got {max_mb!r}")
        self.model = model
        self.store = store
        self.max_mb = float(max_mb)
        self.keep_uploads = Path(keep_uploads) if keep_uploads else None
        self.method = method
        self.layer = layer
        self.explain_frames = int(explain_frames)
        self._lock = threading.Lock()   # one analysis at a time: the torch models are shared

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)

    # -- analysis ---------------------------------------------------------------------------
    def analyze(self, path: str | os.PathLike | None, name: str | None = None) -> Analysis:
        """Check, score and explain one uploaded file.

        Parameters
        ----------
        path : path-like
            The file on disk (e.g. Gradio's temporary copy).
        name : str, optional
            The name to show the user (default: the path's file name). It is only shown,
            never used as a path.
        """
        import copy

        from deepmetric.explain import explain_arrays
        from deepmetric.video.frames import MediaError
        from deepmetric.model import NoFaceError, TooFewFramesError
        from deepmetric.storage import file_sha256

        t0 = time.perf_counter()
        if path is None:
            return Analysis(False, "Upload an image or a video first.", error="missing")
        path = Path(path)
        name = name or path.name
        shown = _md(name)
        ext = path.suffix.lower()
        if ext not in SUPPORTED:
            return Analysis(False, f"**Unsupported file type** {_code(ext or 'none')} "
                                   f"({shown}). Upload an image ({_exts(IMAGE_EXTENSIONS)}) "
                                   f"or a video ({_exts(VIDEO_EXTENSIONS)}).", name,
                            error="unsupported")
        try:
            size = path.stat().st_size
        except OSError:
            return Analysis(False, f"**{shown} is no longer available.** Upload it again.",
                            name, error="missing")
        if size > self.max_bytes:
            return Analysis(False, f"**File too large**: {shown} is {size / 2**20:.1f} MiB; "
                                   f"the limit is {self.max_mb:g} MiB.", name,
                            error="too_large")
        if size == 0:
            return Analysis(False, f"**Empty file**: {shown} has 0 bytes.", name,
                            error="unreadable")
        sha = file_sha256(path)
        extractor = copy.copy(self.model.extractor)
        extractor.save_crops = True
        with self._lock:
            try:
                arrays = extractor.extract_item(path)
                scored = self.model.score_arrays(arrays, name)
            except MediaError as exc:
                why = str(exc).replace(str(path), name)
                return Analysis(False, f"**Could not read {shown}**: the file is corrupt or "
                                       f"not a supported image/video. ({_md(why)})", name,
                                sha256=sha, error="unreadable")
            except NoFaceError:
                n = int(len(arrays["found"]))
                what = "the image" if ext in IMAGE_EXTENSIONS else f"the {n} sampled frames"
                return Analysis(False, f"**No face found** in {what} of {shown}. Upload an "
                                       f"image or clip where a face is clearly visible "
                                       f"(frontal, at least about 40 pixels wide).", name,
                                sha256=sha, n_frames=n, error="no_face")
            except TooFewFramesError as exc:
                why = str(exc).replace(str(path), name)
                return Analysis(False, f"**Cannot score {shown} with this model**: {_md(why)}",
                                name, sha256=sha, n_frames=int(len(arrays["found"])),
                                error="too_few_frames")
            except Exception as exc:  # noqa: BLE001 — shown to the user, logged in full
                log.exception("analysis of %s failed", sha[:12])
                return Analysis(False, f"**Unexpected error** while analysing {shown} "
                                       f"({type(exc).__name__}); details are in the server "
                                       f"log.", name, sha256=sha, error="internal")
            if self.keep_uploads is not None:  # only a file the model could score
                self._keep(path, sha, ext)
            t1 = time.perf_counter()
            frames: list = []
            expl: dict = {}
            if self.explain_frames > 0:
                try:
                    expl = explain_arrays(self.model, arrays, n_frames=self.explain_frames,
                                          method=self.method, layer=self.layer, name=name,
                                          scored=scored)
                    frames = expl.pop("frames")
                except (NotImplementedError, ValueError) as exc:
                    log.warning("no heat maps for %s: %s", sha[:12], exc)
                    expl = {"unavailable": str(exc).replace(str(path), name)}
            t2 = time.perf_counter()
        a = Analysis(True, "", name, sha, float(scored["score"]), scored["verdict"],
                     scored["n_frames"], scored["n_faces"], seconds=t2 - t0,
                     explain_seconds=t2 - t1, frame_scores=scored["frame_scores"],
                     frames=frames, explanation=expl)
        a.message = self._summary(a)
        return a

    def _keep(self, path: Path, sha: str, ext: str) -> None:
        """Copy the upload to ``keep_uploads/<sha256><ext>`` (atomic; once per content). A
        copy that fails (a full disk) is logged; the analysis stands."""
        from deepmetric.storage import atomic_file

        assert re.fullmatch(r"[0-9a-f]{64}", sha) and ext in SUPPORTED
        dest = self.keep_uploads / f"{sha}{ext}"
        if dest.exists():
            return
        try:
            with atomic_file(dest) as tmp:
                shutil.copyfile(path, tmp)
        except OSError as exc:
            log.warning("upload %s not kept: %s", sha[:12], exc)

    def _summary(self, a: Analysis) -> str:
        th = float(self.model.threshold)
        head = f"## {'FAKE' if a.verdict == 'fake' else 'REAL'} — P(fake) = {a.score:.3f}"
        lines = [head,
                 f"Verdict **{a.verdict}** (threshold {th:.2f}, "
                 f"{_how(self.model)} over {a.n_faces} of {a.n_frames} sampled frame(s) with "
                 f"a face). Analysed in **{a.seconds:.1f} s**"
                 + (f" (heat maps {a.explain_seconds:.1f} s)." if a.frames else ".")]
        e = a.explanation
        if a.frames:
            target = ("the pipeline's own fake score" if e.get("target") == "pipeline" else
                      f"a nearest-prototype surrogate of the classifier (prototypes: "
                      f"{e.get('prototypes_from')})")
            lines.append(f"Heat maps: {_METHOD_NAMES[e['method']]}"
                         + (f" on FaceNet {_code(e['layer'])}" if e.get("layer") else "")
                         + f", showing evidence for **fake** ({target}).")
        elif "unavailable" in e:
            lines.append(f"No heat maps for this model: {_md(e['unavailable'])}")
        lines.append(f"File {_md(a.name)} · SHA-256 {_code(a.sha256[:16])}… · model "
                     f"{_code(self.model.version)}")
        return "\n\n".join(lines)

    # -- reports ----------------------------------------------------------------------------
    def report(self, analysis: Analysis | dict | None, label: str | None,
               comment: str | None = None) -> str:
        """Store the user's judgement of the last analysed file; return a status message."""
        if not analysis:
            return "Analyse a file first, then report on it."
        a = analysis if isinstance(analysis, dict) else {
            "sha256": analysis.sha256, "score": analysis.score,
            "verdict": analysis.verdict, "ok": analysis.ok}
        if not a.get("ok") or a.get("sha256") is None or a.get("score") is None:
            return "Only a file the model could score can be reported."
        if label not in LABELS:
            return "Choose **manipulated**, **authentic** or **unsure** first."
        try:
            r = self.store.add(a["sha256"], label, a["score"], self.model.version,
                               comment=comment, verdict=a.get("verdict"))
        except ValueError as exc:
            return f"Report not saved: {_md(str(exc))}"
        return f"Report #{r.id} saved: **{r.label}**. Thank you."

    # -- web UI -----------------------------------------------------------------------------
    def build(self):
        """The Gradio Blocks of the app."""
        import gradio as gr

        with gr.Blocks(title="deepmetric: deepfake check", delete_cache=(600, 600)) as ui:
            gr.Markdown(
                "# deepmetric — is this face manipulated?\n"
                "Upload an image or a short clip. The model finds the face in sampled "
                "frames, scores each frame and averages the scores. Heat maps show which "
                f"parts of the face pushed the score towards *fake*. Model "
                f"{_code(self.model.version)}; files up to {self.max_mb:g} MiB."
                + _model_note(self.model))
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label="Image or clip", file_types=list(SUPPORTED),
                                     type="filepath", elem_id="upload")
                    run = gr.Button("Analyze", variant="primary", elem_id="analyze")
                    verdict = gr.Markdown("", elem_id="verdict")
                with gr.Column(scale=1):
                    plot = gr.Plot(label="P(fake) per frame", show_label=False,
                                   elem_id="frame-plot")
            gallery = gr.Gallery(label="Face crop | heat map of the evidence for fake, for "
                                       "the frames that drove the score most",
                                 columns=3, height="auto", object_fit="contain",
                                 preview=False, fit_columns=False,
                                 buttons=["download", "fullscreen"], elem_id="heatmaps")
            with gr.Group():
                gr.Markdown("### Report this result")
                with gr.Row():
                    label = gr.Radio(list(LABELS), label="I think this file is",
                                     elem_id="report-label")
                    comment = gr.Textbox(label="Comment (optional)", lines=2,
                                         max_length=2000, elem_id="report-comment")
                submit = gr.Button("Submit report", elem_id="report-submit")
                status = gr.Markdown("", elem_id="report-status")
            state = gr.State(None)

            def on_analyze(path):
                a = self.analyze(path, _display_name(path))
                _discard_upload(path)
                keep = ({"ok": True, "sha256": a.sha256, "score": a.score,
                         "verdict": a.verdict} if a.ok else None)
                msg = a.message if a.ok else f"⚠️ {a.message}"
                return (msg, score_figure(a, self.model.threshold) if a.ok else None,
                        gallery_items(a), keep, None, "")

            def on_report(keep, lab, text):
                return self.report(keep, lab, text)

            run.click(on_analyze, inputs=upload,
                      outputs=[verdict, plot, gallery, state, upload, status])
            submit.click(on_report, inputs=[state, label, comment], outputs=status)
        ui.queue(default_concurrency_limit=1)
        return ui

    def launch(self, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
        """Serve the app (blocking unless ``block=False``); returns Gradio's launch tuple."""
        import gradio as gr

        ui = self.build()
        theme = gr.themes.Default(font=["system-ui", "sans-serif"],
                                  font_mono=["ui-monospace", "monospace"])
        return ui.launch(server_name=host, server_port=int(port) or None,
                         max_file_size=self.max_bytes, prevent_thread_lock=not block,
                         show_error=False, quiet=False, theme=theme, css=CSS,
                         footer_links=[], ssr_mode=False)


_METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++",
                 "ig": "integrated gradients"}


def _model_note(model) -> str:
    """What the header says about the model: a smoke test's warning, or its card's limit."""
    if model.smoke_test:
        return (f"\n\n**Warning: a smoke-test model.** {_md(model.smoke_test[0].upper())}"
                f"{_md(model.smoke_test[1:])}.")
    card = model.info.get("card") or {}
    return f"\n\n{_md(card['app_note'])}" if card.get("app_note") else ""


def _how(model) -> str:
    return {"mean": "mean", "median": "median"}.get(model.how, f"mean of the top {model.k}")


def _md(s: str) -> str:
    """Escape text for Gradio's Markdown (no HTML, no Markdown syntax)."""
    s = html.escape(str(s), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", s)


def _code(s: str) -> str:
    """A Markdown code span of text (backticks and newlines removed)."""
    return "`" + re.sub(r"[`\r\n]", "", str(s)) + "`"


def _exts(exts) -> str:
    return ", ".join(sorted(exts))


def _display_name(path) -> str | None:
    return Path(path).name if path else None


def _upload_root() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))


def _discard_upload(path) -> None:
    """Delete Gradio's copy of an upload (only inside Gradio's upload folder)."""
    if not path:
        return
    p = Path(path).resolve()
    root = _upload_root().resolve()
    if root in p.parents:
        p.unlink(missing_ok=True)
        try:
            p.parent.rmdir()
        except OSError:
            pass


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str]) -> dict:
    """``key=value`` arguments → options (types from :data:`DEFAULTS`).

    Raises
    ------
    SystemExit
        On ``--help`` (status 0) or a bad argument (status 2), with a message.
    """
    opts = dict(DEFAULTS)
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        key, sep, value = arg.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or key not in DEFAULTS:
            raise SystemExit(f"experiments.app: bad argument {arg!r}; use key=value with "
                             f"key in {sorted(DEFAULTS)}")
        kind = type(DEFAULTS[key])
        try:
            if kind is bool:
                opts[key] = {"true": True, "false": False}[value.strip().lower()]
            else:
                opts[key] = kind(value) if kind is not str else value
        except KeyError:
            raise SystemExit(f"experiments.app: {key} must be true or false, got "
                             f"{value!r}") from None
        except ValueError:
            raise SystemExit(f"experiments.app: {key} must be {kind.__name__}, got "
                             f"{value!r}") from None
    return opts


def make_app(opts: dict) -> DetectorApp:
    """Load the model (``opts["model"]``, else the packaged one) and open the report store
    named by ``opts`` (see :func:`parse_args`)."""
    from deepmetric.pretrained import load_model
    from experiments.reports import ReportStore

    model, described = load_model(opts["model"] or None, trust_pickle=opts["trust_pickle"])
    log.info("model: %s", described)
    if model.smoke_test:
        log.warning("model %s is a smoke-test model: %s", model.version, model.smoke_test)
    store = ReportStore(opts["db"] or default_reports_db())
    return DetectorApp(model, store, max_mb=opts["max_mb"],
                       keep_uploads=opts["keep_uploads"] or None, method=opts["method"],
                       layer=opts["layer"], explain_frames=opts["explain_frames"])


def default_reports_db() -> str:
    """``reports.db`` in :func:`deepmetric.storage.data_root` (the folder created)."""
    from deepmetric.storage import data_root

    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    return str(root / "reports.db")


def _private_gradio_tmp() -> None:
    """Keep Gradio's copies of uploads in a private folder removed at exit."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return
    tmp = tempfile.mkdtemp(prefix="deepmetric-app-")
    os.environ["GRADIO_TEMP_DIR"] = tmp
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _private_gradio_tmp()
    # Stop cleanly on SIGTERM too (atexit handlers, e.g. removing the private folder, run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = make_app(opts)
    log.info("model %s (%s), reports in %s", app.model.version,
             opts["model"] or "packaged", app.store)
    # Load FaceNet and MTCNN now so that the first upload does not wait for them.
    app.model.extractor.embedder.model
    app.model.extractor.detector.detect([np.zeros((64, 64, 3), np.uint8)])
    app.launch(opts["host"], opts["port"], block=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
