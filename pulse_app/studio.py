"""`ecgbench studio`: ECGBench Studio, a local web app (Gradio) with two tabs.

    ecgbench studio --model DIR_OR_ID --results OUT [OUT ...] [--data DIR] [--host 127.0.0.1] [--port N]

* Ask: upload an ECG image (or pick one of the bundled synthetic examples), ask, read the answer
  as it streams, ask a follow-up. The model is loaded once, in the background after the page is
  up, through ``pulse_models.ask.load`` (the `--model pulse` adapter's constructor); every turn is
  ``pulse_models.ask.answer`` with a streamer. The facts `ecgbench ask --json` prints (template,
  anyres grid, token counts, truncation) are shown per turn.
* Explore: the runs under --results (split runs merged as `ecgbench report` does), the subset's
  corpus numbers with intervals, a paged and filtered table of items and the item view (see
  ``pulse_app.views``, where all of the view logic lives).

Offline by construction: Gradio's analytics are switched off before it is imported, the theme
uses system fonts (no Google Fonts), nothing is fetched while the app runs. It binds 127.0.0.1
unless --host says otherwise. Bad input (non-image or oversized upload, unreadable results
folder, a model that fails to load or to generate) shows as a message in the page.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from pulse_app import views

DEFAULT_HOST = "127.0.0.1"  # local only: the app shows clinical images and has no login
DEFAULT_PORT = 7860  # Gradio's usual port; --port 0 picks a free one
MAX_UPLOAD_MB = 20  # a 300-dpi 12-lead scan as PNG is 2-8 MB; larger files are refused with a message
STUDIO_RESAMPLES = 1000  # bootstrap resamples of the corpus numbers: the report's default
STATUS_POLL_S = 1.0  # seconds between model-status refreshes while it loads
MODEL_WAIT_S = 600  # a question asked while the model loads waits this long (7B weights from a slow disk)
UI_MAX_NEW_TOKENS = 2048  # slider ceiling: twice the protocol's 1024
UI_DEFAULT_MAX_NEW_TOKENS = 512  # chat answers rarely need the protocol's 1024; the slider goes higher
EXAMPLE_RHYTHMS = ("NORM", "SB", "ST")  # one bundled example per synthetic rhythm class
# System font stacks: Gradio's default theme would fetch Google Fonts, which an offline machine cannot.
SANS_FONTS = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "DejaVu Sans", "sans-serif")
MONO_FONTS = ("ui-monospace", "DejaVu Sans Mono", "monospace")
FILTER_A_WRONG_B_RIGHT = "A wrong, B right"
FILTER_CHOICES = (FILTER_A_WRONG_B_RIGHT, "unparsed", "invalid", "generation failed", "judge failed")
CSS = """
.items td, .items th, .corpus td, .corpus th {border:1px solid #ccc; padding:2px 6px; font-size:12px; vertical-align:top}
.items, .corpus {border-collapse:collapse}
.thumb {width:%dpx}
.good {color:#1b5e20; font-weight:bold} .bad {color:#b00020; font-weight:bold} .muted {color:#777}
mark.span {background:#fff59d} mark.negated {background:#ffcdd2; text-decoration:line-through}
pre {white-space:pre-wrap}
""" % views.THUMB_WIDTH


def _gradio() -> Any:
    """Gradio, imported with analytics off; an install hint when the [app] extra is missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage pings, no version check
    try:
        import gradio as gr
    except ImportError as exc:
        raise SystemExit("ecgbench studio needs Gradio: pip install 'ecgbench-lmms[app]'") from exc
    return gr


def example_images(folder: Path | None = None) -> list[Path]:
    """A few synthetic ECGs drawn as the demo draws them (written once, then reused)."""
    import numpy as np

    from pulse_app.demo import DEMO_IMAGE_SIZE, DEMO_INK_WIDTH
    from pulse_tasks import synth

    out = folder or (synth.cache_dir() / "studio_examples")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, rhythm in enumerate(EXAMPLE_RHYTHMS):
        path = out / f"synthetic-{rhythm.lower()}-{DEMO_IMAGE_SIZE[0]}x{DEMO_IMAGE_SIZE[1]}.png"
        if not path.exists():
            signal, _ = synth.simulate_ecg(rhythm, np.random.default_rng(k))
            tmp = path.with_suffix(f".tmp{os.getpid()}.png")
            synth.render_ecg(signal, DEMO_IMAGE_SIZE, ink_width=DEMO_INK_WIDTH).save(tmp)
            os.replace(tmp, path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# Ask: the model, loaded once


class Asker:
    """The Ask tab's model: loaded once in the background; its state is what the tab shows."""

    def __init__(self, model: str | None, options: argparse.Namespace) -> None:
        self.name, self.options = model, options
        self.model: Any = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.lock = threading.Lock()  # one generation at a time: one model in memory

    def start(self) -> None:
        if self.name is None:
            self.ready.set()
            return
        threading.Thread(target=self._load, name="studio-model-load", daemon=True).start()

    def _load(self) -> None:
        from pulse_models import ask

        try:
            path, _ = ask.check_model(self.name)
            ask._quiet_transformers()
            self.model = ask.load(self.options, path)
        except ask.AskError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - weights/tokenizer/config problems: shown in the page
            self.error = f"cannot load model {self.name}: {type(exc).__name__}: {ask._one_line(exc)}"
        finally:
            self.ready.set()

    def status(self) -> str:
        if self.name is None:
            return ("No model loaded. Start Studio with one to ask questions: "
                    "`ecgbench studio --model DIR_OR_HUB_ID` (a PULSE/LLaVA checkpoint or an HF image-text-to-text model).")
        if not self.ready.is_set():
            return f"Loading model `{self.name}` ..."
        if self.error:
            return f"**Model failed to load**: {self.error}"
        return f"Model `{self.name}` ({self.model.format}) ready on {self.model.device}."


def _check_upload(path: str | None) -> Any:
    """The uploaded image as PIL RGB, or AskError with the reason (missing, too large, not an image)."""
    from pulse_models.ask import AskError, check_image

    if not path:
        raise AskError("upload an ECG image (or pick an example) first")
    size = Path(path).stat().st_size if Path(path).exists() else 0
    name = Path(path).name  # Gradio's upload folder is no business of the page
    if size > MAX_UPLOAD_MB * 1024 * 1024:
        raise AskError(f"{name} is {size / 2**20:.1f} MB; images up to {MAX_UPLOAD_MB} MB are accepted")
    try:
        return check_image(path)
    except AskError as exc:
        raise AskError(str(exc).replace(path, name)) from None


class Studio:
    """Both tabs' state and handlers (Gradio calls the bound methods)."""

    def __init__(self, results: list[str], data: str | None, asker: Asker, resamples: int = STUDIO_RESAMPLES,
                 max_new_tokens: int = UI_DEFAULT_MAX_NEW_TOKENS) -> None:
        self.asker, self.resamples, self.data_arg = asker, resamples, data
        self.max_new_tokens = max(1, min(UI_MAX_NEW_TOKENS, max_new_tokens))
        self.examples: list[Path] = []
        self.loaded = views.LoadedRuns()
        self.items = views.ItemData(None)
        self.data_note = ""
        self._corpus: dict[str, str] = {}
        self._rows: dict[str, list[views.ItemRow]] = {}
        # Gradio runs different event handlers at once: a table built while a Load replaces the runs
        # would mix the old run's rows with the new message. One Explore handler at a time.
        self._explore_lock = threading.RLock()
        self.load(results)

    # ------------------------------------------------------------------ Explore

    def load(self, results: list[str]) -> None:
        with self._explore_lock:
            self.loaded = views.load_results(results)
            source, self.data_note = views.data_source_for(self.data_arg, self.loaded.runs)
            self.items = views.ItemData(source)
            self._corpus, self._rows = {}, {}

    @property
    def run_names(self) -> list[str]:
        return [r.name for r in self.loaded.runs]

    def message(self) -> str:
        lines = [f"**Cannot read** {e}" for e in self.loaded.errors]
        if not self.loaded.runs:
            lines.append("No runs loaded: give `--results OUT` (an lmms-eval output folder) or type one above.")
        if self.data_note:
            lines.append(self.data_note)
        lines += [f"**Data** {name}: {err}" for name, err in self.items.errors.items()]
        return "\n\n".join(lines)

    def runs_markdown(self) -> str:
        if not self.loaded.runs:
            return ""
        lines = ["| run | model | model_args | results files | data |", "|---|---|---|---|---|"]
        for run in self.loaded.runs:
            f = views.run_facts(run)
            cells = [f["name"], f["model"], f"`{f['model_args']}`" if f["model_args"] else "",
                     "<br>".join(f"`{p}`" for p in f["results_files"]), "SYNTHETIC DATA" if f["synthetic"] else "ECGBench"]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)

    def rows(self, subset: str) -> list[views.ItemRow]:
        if subset not in self._rows:
            self._rows[subset] = views.item_rows(self.loaded.runs, subset, self.items.docs(subset))
        return self._rows[subset]

    def corpus(self, subset: str) -> str:
        if subset not in self._corpus:
            self._corpus[subset] = views.corpus_html(self.loaded.runs, subset, self.resamples)
        return self._corpus[subset]

    def filters(self, run_a: str | None, run_b: str | None, mode: str, flags: list[str], text: str) -> views.Filters:
        flags = flags or []
        ab = FILTER_A_WRONG_B_RIGHT in flags
        return views.Filters(wrong_in=run_a if ab else None, right_in=run_b if ab else None, mode=mode or "strict",
                             unparsed="unparsed" in flags, invalid="invalid" in flags,
                             failed="generation failed" in flags, judge_failed="judge failed" in flags, text=text or "")

    def table(self, subset: str | None, run_a: str | None, run_b: str | None, mode: str, flags: list[str],
              text: str, page: float | None) -> tuple[Any, ...]:
        """(corpus numbers, items table, page note, page number, item picker, message) for the current
        filters, all read from one state of the loaded runs."""
        with self._explore_lock:
            return self._table(subset, run_a, run_b, mode, flags, text, page)

    def _table(self, subset: str | None, run_a: str | None, run_b: str | None, mode: str, flags: list[str],
               text: str, page: float | None) -> tuple[Any, ...]:
        gr = _gradio()
        if not subset or not self.loaded.runs:
            return "", "", "", 1, gr.update(choices=[], value=None), self.message()
        flags = flags or []
        if FILTER_A_WRONG_B_RIGHT in flags and (not run_a or not run_b):
            return (self.corpus(subset), '<p class="bad">Pick run A and run B for "A wrong, B right".</p>', "", 1,
                    gr.update(choices=[], value=None), self.message())
        shown = views.filter_rows(self.rows(subset), self.filters(run_a, run_b, mode, flags, text))
        pg = views.paginate(shown, int(page or 1))
        thumbs = {row.id: t for row in pg.rows if (t := self.items.thumbnail(subset, row.id))}
        note = f"page {pg.number} of {pg.count}, {pg.total} of {len(self.rows(subset))} items"
        no_samples = [r.name for r in self.loaded.runs if subset in r.subsets and r.subsets[subset].records is None]
        if no_samples:  # aggregated numbers only: lmms-eval ran without --log_samples
            note += f"; no per-item samples in {', '.join(no_samples)} (run lmms-eval with --log_samples)"
        ids = [row.id for row in pg.rows]
        return (self.corpus(subset), views.table_html(pg, self.run_names, thumbs, mode or "strict"), note, pg.number,
                gr.update(choices=ids, value=None), self.message())

    def item(self, subset: str | None, item_id: str | None) -> tuple[Any, str]:
        """(full-size image, item view) of one item."""
        if not subset or not item_id:
            return None, ""
        with self._explore_lock:
            return self._item(subset, item_id)

    def _item(self, subset: str, item_id: str) -> tuple[Any, str]:
        row = next((r for r in self.rows(subset) if r.id == item_id), None)
        if row is None:
            return None, f'<p class="bad">No item {item_id} in {subset}.</p>'
        image = self.items.image(subset, item_id)
        body = views.item_html(row, self.run_names)
        if image is None:
            body = '<p class="muted">No image: the run\'s data is not at hand (start Studio with --data).</p>' + body
        return image, body

    def reload(self, folder: str, mode: str, flags: list[str], text: str) -> tuple[Any, ...]:
        """Load the runs under the typed folder(s) instead of the current ones: the run list, the
        pickers and the first page of the table (with the message) in one update, so the page never
        shows a new message over an old run's rows, nor a previous error over new rows."""
        gr = _gradio()
        with self._explore_lock:
            self.load([p for p in (folder or "").split() if p])
            names, subsets = self.run_names, views.subsets_of(self.loaded.runs)
            subset = subsets[0] if subsets else None
            run_a, run_b = (names[0], names[-1]) if names else (None, None)
            return (self.runs_markdown(), gr.update(choices=subsets, value=subset),
                    gr.update(choices=names, value=run_a), gr.update(choices=names, value=run_b),
                    *self._table(subset, run_a, run_b, mode, flags, text, 1))

    # ------------------------------------------------------------------ Ask

    def ask(self, upload: str | None, question: str, turns: list[list[str]] | None, max_new_tokens: float,
            temperature: float) -> Iterator[tuple[Any, ...]]:
        """Stream the answer of one turn: yields (chat messages, turns, facts, message, question box)."""
        from pulse_models import ask

        turns = [list(t) for t in (turns or [])]
        chat = _messages(turns)
        question = (question or "").strip()
        if self.asker.name is not None and not self.asker.ready.is_set():
            yield chat, turns, None, self.asker.status(), question  # say so while the model loads
        if self.asker.name is None or not self.asker.ready.wait(timeout=MODEL_WAIT_S) or self.asker.error:
            yield chat, turns, None, self.asker.status(), question
            return
        model = self.asker.model
        try:
            image = _check_upload(upload)
            question = ask.check_question(question)
            processed = model.engine.process_image(image)
        except ask.AskError as exc:
            yield chat, turns, None, f"**Cannot ask**: {exc}", question
            return
        except Exception as exc:  # noqa: BLE001 - image processing failures
            yield chat, turns, None, f"**Cannot ask**: the image cannot be processed: {ask._one_line(exc)}", question
            return
        from transformers import TextIteratorStreamer

        from pulse_models.engine import GenSettings

        settings = GenSettings(max_new_tokens=max(1, int(max_new_tokens)), temperature=max(0.0, float(temperature)),
                               top_p=model.defaults.top_p, num_beams=1)
        streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        history = [(q, a) for q, a in turns] + [(question, None)]
        done: dict[str, Any] = {}

        def generate() -> None:  # the generation thread: the page is fed from the streamer meanwhile
            try:
                with self.asker.lock:
                    done["turn"] = ask.answer(model, history, processed, stream=False, settings=settings,
                                              streamer=streamer)
            except Exception as exc:  # noqa: BLE001
                done["error"] = f"generation failed: {type(exc).__name__}: {ask._one_line(exc)}"
                streamer.end()

        worker = threading.Thread(target=generate, name="studio-generate", daemon=True)
        worker.start()
        partial = ""
        for piece in streamer:
            partial += piece
            yield _messages(turns + [[question, partial]]), turns, None, "generating ...", ""
        worker.join()
        if "error" in done:
            yield _messages(turns), turns, None, f"**{done['error']}**", question
            return
        turn = done["turn"]
        turns.append([question, turn.answer])
        opts = argparse.Namespace(model=self.asker.name, arena_history=self.asker.options.arena_history)
        facts = ask.turn_record(model, opts, ask.describe_image(model, image, Path(upload).name), len(turns), turn,
                                settings)
        yield _messages(turns), turns, facts, "", ""

    def status_tick(self) -> tuple[str, Any]:
        """The model status line, and the timer kept running only while the model loads."""
        return self.asker.status(), _gradio().Timer(active=not self.asker.ready.is_set())

    # ------------------------------------------------------------------ the page

    def build(self) -> Any:
        gr = _gradio()
        subsets, names = views.subsets_of(self.loaded.runs), self.run_names
        with gr.Blocks(title="ECGBench Studio", analytics_enabled=False) as app:
            gr.Markdown("# ECGBench Studio")
            with gr.Tabs():
                with gr.Tab("Ask", id="ask"):
                    model_status = gr.Markdown(self.asker.status(), elem_id="ask-status")
                    with gr.Row():
                        with gr.Column(scale=1):
                            upload = gr.File(label="ECG image", type="filepath", elem_id="ask-upload")
                            preview = gr.Image(label="image", interactive=False, elem_id="ask-preview", height=260)
                            try:
                                self.examples = example_images()
                            except Exception:  # noqa: BLE001 - examples are a convenience, never a failure
                                self.examples = []
                            if self.examples:
                                gr.Examples([[str(p)] for p in self.examples], inputs=[upload],
                                            label="synthetic examples (not ECGBench)")
                            with gr.Accordion("generation", open=False):
                                max_new = gr.Slider(1, UI_MAX_NEW_TOKENS, value=self.max_new_tokens, step=1,
                                                    label="max new tokens", elem_id="ask-max-new-tokens")
                                temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
                        with gr.Column(scale=2):
                            chat = gr.Chatbot(label="conversation", elem_id="ask-chat", height=380)
                            question = gr.Textbox(label="question", placeholder="What is the rhythm?", elem_id="ask-question")
                            with gr.Row():
                                send = gr.Button("Send", variant="primary", elem_id="ask-send")
                                clear = gr.Button("New conversation", elem_id="ask-clear")
                            ask_message = gr.Markdown("", elem_id="ask-message")
                            facts = gr.JSON(label="last turn: template, image grid, tokens (as `ecgbench ask --json`)",
                                            elem_id="ask-facts")
                    turns = gr.State([])
                with gr.Tab("Explore", id="explore"):
                    explore_message = gr.Markdown(self.message(), elem_id="explore-message")
                    with gr.Row():
                        folder = gr.Textbox(label="results folder(s)", elem_id="explore-folder", scale=4,
                                            placeholder="lmms-eval --output_path folder(s), space-separated")
                        load = gr.Button("Load", elem_id="explore-load", scale=1)
                    runs_md = gr.Markdown(self.runs_markdown(), elem_id="explore-runs")
                    with gr.Row():
                        subset = gr.Dropdown(subsets, value=subsets[0] if subsets else None, label="subset",
                                             elem_id="explore-subset")
                        run_a = gr.Dropdown(names, value=names[0] if names else None, label="run A", elem_id="explore-run-a")
                        run_b = gr.Dropdown(names, value=names[-1] if names else None, label="run B", elem_id="explore-run-b")
                        mode = gr.Radio(list(views.MODES), value="strict", label="right/wrong by", elem_id="explore-mode")
                    with gr.Row():
                        flags = gr.CheckboxGroup(list(FILTER_CHOICES), label="filters", elem_id="explore-filters")
                        search = gr.Textbox(label="search", elem_id="explore-search")
                    corpus = gr.HTML(elem_id="explore-corpus")
                    with gr.Row():
                        prev_page = gr.Button("< prev", elem_id="explore-prev")
                        page = gr.Number(1, label="page", precision=0, minimum=1, elem_id="explore-page")
                        next_page = gr.Button("next >", elem_id="explore-next")
                        page_note = gr.Markdown(elem_id="explore-page-note")
                    table = gr.HTML(elem_id="explore-table")
                    item_id = gr.Dropdown([], label="open item", elem_id="explore-item")
                    with gr.Row():
                        item_image = gr.Image(label="ECG", interactive=False, elem_id="explore-image", scale=1)
                        item_view = gr.HTML(elem_id="explore-item-view")

            # Ask events
            upload.change(_preview, inputs=[upload], outputs=[upload, preview, ask_message]).then(
                _new_conversation, outputs=[chat, turns, facts])
            ask_inputs = [upload, question, turns, max_new, temperature]
            ask_outputs = [chat, turns, facts, ask_message, question]
            send.click(self.ask, inputs=ask_inputs, outputs=ask_outputs)
            question.submit(self.ask, inputs=ask_inputs, outputs=ask_outputs)
            clear.click(_new_conversation, outputs=[chat, turns, facts])
            # While the model loads, the status line is refreshed until it is ready (or failed).
            status_timer = gr.Timer(STATUS_POLL_S, active=not self.asker.ready.is_set())
            status_timer.tick(self.status_tick, outputs=[model_status, status_timer])
            app.load(self.status_tick, outputs=[model_status, status_timer])

            # Explore events
            table_inputs = [subset, run_a, run_b, mode, flags, search, page]
            table_outputs = [corpus, table, page_note, page, item_id, explore_message]
            for control in (subset, run_a, run_b, mode, flags):
                control.change(_first_page, outputs=[page]).then(self.table, table_inputs, table_outputs)
            search.submit(_first_page, outputs=[page]).then(self.table, table_inputs, table_outputs)
            page.submit(self.table, table_inputs, table_outputs)
            prev_page.click(_step_page(-1), inputs=[page], outputs=[page]).then(self.table, table_inputs, table_outputs)
            next_page.click(_step_page(1), inputs=[page], outputs=[page]).then(self.table, table_inputs, table_outputs)
            item_id.change(self.item, inputs=[subset, item_id], outputs=[item_image, item_view])
            load.click(self.reload, inputs=[folder, mode, flags, search],
                       outputs=[runs_md, subset, run_a, run_b, *table_outputs])
            app.load(self.table, table_inputs, table_outputs)
        return app


def _messages(turns: list[list[str]]) -> list[dict[str, str]]:
    """Chatbot messages of the (question, answer) turns."""
    out = []
    for q, a in turns:
        out.append({"role": "user", "content": q})
        out.append({"role": "assistant", "content": a or ""})
    return out


def _preview(upload: str | None) -> tuple[Any, Any, Any]:
    """(upload, preview, message): a file that is not a usable image is refused (the upload is
    cleared, so another can be dropped) with the reason; clearing keeps the last message."""
    from pulse_models.ask import AskError

    gr = _gradio()
    if not upload:
        return gr.skip(), None, gr.skip()
    try:
        return gr.skip(), _check_upload(upload), ""
    except AskError as exc:
        return None, None, f"**Cannot use this file**: {exc}"


def _new_conversation() -> tuple[list, list, None]:
    return [], [], None


def _first_page() -> int:
    return 1


class _step_page:
    """A page +-1 handler (a small callable object, not a closure)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, page: float | None) -> int:
        return max(1, int(page or 1) + self.step)


def theme() -> Any:
    gr = _gradio()
    return gr.themes.Base(font=list(SANS_FONTS), font_mono=list(MONO_FONTS))


def launch(studio: Studio, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, block: bool = True) -> Any:
    """Start the server; returns the Gradio app (``app.local_url``). ``port`` 0 or None: a free port."""
    app = studio.build()
    app.queue(default_concurrency_limit=1)
    if not port:
        import socket

        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    examples = sorted({str(p.parent) for p in studio.examples})
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, share=False,
               ssr_mode=False, theme=theme(), css=CSS, max_file_size=f"{2 * MAX_UPLOAD_MB}mb",
               allowed_paths=examples or None, footer_links=[], show_error=False)
    studio.asker.start()
    if block:
        print(f"ECGBench Studio on {app.local_url}  (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            app.close()
    return app


# ----------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pulse_models.ask import CONV_TEMPLATES, DTYPES, HISTORY_MODES

    parser.add_argument("--model", metavar="DIR_OR_ID", help="model for the Ask tab (as `--model pulse` loads it)")
    parser.add_argument("--results", nargs="+", default=[], metavar="DIR",
                        help="lmms-eval output folder(s) or results files for the Explore tab")
    parser.add_argument("--data", metavar="DIR",
                        help="ECGBench copy the runs read (questions and images); default $ECGBENCH_DATA, else the hub cache")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--resamples", type=int, default=STUDIO_RESAMPLES, help="bootstrap resamples of the corpus numbers")
    parser.add_argument("--max-new-tokens", type=int, default=UI_DEFAULT_MAX_NEW_TOKENS,
                        help=f"Ask's initial max new tokens (default {UI_DEFAULT_MAX_NEW_TOKENS}; the page has a slider)")
    model = parser.add_argument_group("model (as lmms-eval --model pulse)")
    model.add_argument("--dtype", choices=DTYPES, default=None)
    model.add_argument("--device-map", default=None, help="one device, e.g. cuda:0 or cpu (default: cuda if present)")
    model.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager", "flash_attention_2"))
    model.add_argument("--conv-template", default="auto", choices=CONV_TEMPLATES)
    model.add_argument("--arena-history", default="standard", choices=HISTORY_MODES)
    model.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (HF models)")


def model_options(args: argparse.Namespace) -> argparse.Namespace:
    """The options `pulse_models.ask.load` reads (generation defaults: the protocol's)."""
    from pulse_models import ask

    return argparse.Namespace(
        dtype=args.dtype, attn_implementation=args.attn_implementation, device=None, device_map=args.device_map,
        conv_template=args.conv_template, arena_history=args.arena_history, trust_remote_code=args.trust_remote_code,
        max_new_tokens=ask.DEFAULT_MAX_NEW_TOKENS, temperature=ask.DEFAULT_TEMPERATURE, top_p=None,
        num_beams=ask.DEFAULT_NUM_BEAMS)


def run(args: argparse.Namespace) -> int:
    if args.resamples < 0:
        print("ecgbench studio: --resamples must be >= 0", file=sys.stderr)
        return 2
    studio = Studio(list(args.results), args.data, Asker(args.model, model_options(args)), args.resamples,
                    args.max_new_tokens)
    for err in studio.loaded.errors:
        print(f"ecgbench studio: cannot read {err}", file=sys.stderr)
    launch(studio, args.host, args.port, block=True)
    return 0
