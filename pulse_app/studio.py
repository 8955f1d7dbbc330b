"""`ecgbench studio`: ECGBench Studio, a local web app (Gradio) with two tabs.

    ecgbench studio --model DIR_OR_ID --results OUT [OUT ...] [--data DIR] [--host 127.0.0.1] [--port N]

* Ask: upload an ECG image (or pick one of the bundled synthetic examples), ask, read the answer
  as it streams, ask a follow-up. The model is loaded once, in the background after the page is
  up, through ``pulse_models.ask.load`` (``pulse_models.loading.load_model``, the loader of the
  `--model pulse` adapter); every turn is
  ``pulse_models.ask.answer`` with a streamer. The facts `ecgbench ask --json` prints (template,
  anyres grid, token counts, truncation) are shown per turn. With --api-base/--api-model the model
  is one served at an OpenAI-compatible URL (`vllm serve CHECKPOINT`): each turn is a streamed
  chat-completions request (``pulse_models.served``), the earlier turns sent as messages.
* Explore: the runs under --results (split runs merged as `ecgbench report` does), the subset's
  corpus numbers with intervals, a paged and filtered table of items and the item view (see
  ``pulse_app.views``, where all of the view logic lives).

Offline by construction: Gradio's analytics are switched off before it is imported, the theme
uses system fonts (no Google Fonts), nothing is fetched while the app runs. It binds 127.0.0.1
unless --host says otherwise. Bad input (non-image or oversized upload, unreadable results
folder, a model that fails to load or to generate) shows as a message in the page.

Served to others (``pulse_app.access``): each page has its own Explore view (a ``gr.State``; a
new page starts with the --results runs); bound beyond loopback the folder box opens only
folders under --results (resolved), refusing others and missing ones with one message; images
come from the data copy or, as a run's samples name them, from files under the results folders
or the data copy (decoded here, served as Gradio cache copies); Gradio's file route serves only
the bundled examples' folder besides its cache; Ask's turns wait in line, one per visitor.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from pulse_app import access, views
from pulse_tasks.data.sources import IMAGE_DIR

DEFAULT_HOST = "127.0.0.1"  # local only: the app shows clinical images and has no login
DEFAULT_PORT = 7860  # Gradio's usual port; --port 0 picks a free one
MAX_UPLOAD_MB = 20  # a 300-dpi 12-lead scan as PNG is 2-8 MB; larger files are refused with a message
STUDIO_RESAMPLES = 1000  # bootstrap resamples of the corpus numbers: the report's default
STATUS_POLL_S = 1.0  # seconds between model-status refreshes while it loads
MODEL_WAIT_S = 600  # a question asked while the model loads waits this long (7B weights from a slow disk)
UI_MAX_NEW_TOKENS = 2048  # slider ceiling: twice the protocol's 1024
UI_MAX_TEMPERATURE = 1.5  # slider ceiling, also applied to what a scripted client sends
UI_DEFAULT_MAX_NEW_TOKENS = 512  # chat answers rarely need the protocol's 1024; the slider goes higher
ASK_TURNS_PER_VISITOR = 1  # a visitor (one open page) has one question waiting or being answered at a time
QUEUE_MAX_SIZE = 64  # page events waiting in Gradio's queue, all visitors together; more get "queue full"
ASK_MAX_WAITING = 16  # questions waiting for the model, all visitors together; more are refused with a message
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
    from pulse_tasks.data import synth

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

    def __init__(self, model: str | None, options: argparse.Namespace, served: Any = None) -> None:
        """``served``: a ``pulse_models.served.ServedModel`` in place of a checkpoint to load."""
        self.name, self.options, self.served = (served.model if served else model), options, served
        self.model: Any = served
        self.error: str | None = None
        self.ready = threading.Event()
        self.lock = threading.Lock()  # one generation at a time: one model in memory

    def start(self) -> None:
        if self.name is None or self.served is not None:  # nothing to load
            self.ready.set()
            return
        threading.Thread(target=self._load, name="studio-model-load", daemon=True).start()

    def _load(self) -> None:
        from pulse_models import ask

        try:
            ask._quiet_transformers()
            self.model = ask.load(self.options, self.name)
        except ask.AskError as exc:  # not a checkpoint, or weights/tokenizer/config problems: shown in the page
            self.error = str(exc)
        finally:
            self.ready.set()

    def status(self) -> str:
        if self.name is None:
            return ("No model loaded. Start Studio with one to ask questions: "
                    "`ecgbench studio --model DIR_OR_HUB_ID` (a PULSE/LLaVA checkpoint or an HF image-text-to-text model), "
                    "or `--api-base URL --api-model NAME` (a model served at an OpenAI-compatible URL, e.g. `vllm serve`).")
        if self.served is not None:
            return f"Model {self.served.describe()} (answers come from that server)."
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


class ExploreView:
    """One visitor's Explore: the runs loaded, the data they read, their rows and corpus numbers
    (computed once per subset). Each visitor's page holds its own in a ``gr.State``; the view of
    the --results runs is shared by every page that has loaded nothing else."""

    def __init__(self, loaded: views.LoadedRuns, data: str | None, resamples: int,
                 media_roots: list[Path]) -> None:
        self.loaded, self.resamples = loaded, resamples
        source, self.data_note = views.data_source_for(data, loaded.runs)
        self.items = views.ItemData(source)
        copy = Path(source.location).resolve() if source is not None and source.kind != "hub" else None
        # A run's own image references are opened only under these (never a path pointing elsewhere).
        self.media_roots = [*media_roots, *([copy] if copy else [])]
        self.media_bases = [copy, copy / IMAGE_DIR] if copy else []
        self._corpus: dict[str, str] = {}
        self._rows: dict[str, list[views.ItemRow]] = {}
        self._media: dict[str, dict[str, tuple[Path, list[str]]]] = {}
        self._media_images: dict[tuple[str, str], Any] = {}

    @property
    def run_names(self) -> list[str]:
        return [r.name for r in self.loaded.runs]

    @property
    def subsets(self) -> list[str]:
        return views.subsets_of(self.loaded.runs)

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

    def image(self, subset: str, item_id: str) -> Any | None:
        """The item's image: from the data copy, else one its samples name (lmms-eval's
        ``input_media``) that lies under the results folders or the data copy; else None."""
        image = self.items.image(subset, item_id)
        if image is not None:
            return image
        key = (subset, item_id)
        if key not in self._media_images:
            folder, refs = self._sample_media(subset).get(item_id, (None, []))
            bases = [folder, *self.media_bases] if folder else self.media_bases
            self._media_images[key] = next(
                (img for ref in refs if (img := access.open_media_image(ref, bases, self.media_roots)) is not None),
                None)
        return self._media_images[key]

    def thumbnail(self, subset: str, item_id: str) -> str | None:
        thumb = self.items.thumbnail(subset, item_id)
        if thumb is None and (image := self.image(subset, item_id)) is not None:
            thumb = views.thumbnail_uri(image)
        return thumb

    def _sample_media(self, subset: str) -> dict[str, tuple[Path, list[str]]]:
        """Item id -> (the samples file's folder, the image references it logged), first run first."""
        if subset not in self._media:
            from pulse_tasks.results.runs import read_sample_media

            found: dict[str, tuple[Path, list[str]]] = {}
            for run in self.loaded.runs:
                sr = run.subsets.get(subset)
                if sr is None or sr.samples_file is None:
                    continue
                try:
                    media = read_sample_media(sr.samples_file, sr.subset)
                except OSError:
                    continue
                for item_id, refs in media.items():
                    found.setdefault(item_id, (sr.samples_file.parent, refs))
            self._media[subset] = found
        return self._media[subset]


class Visitor:
    """One page's Explore state (a ``gr.State``, made per page): the view it loaded, None for the
    --results runs. Handlers that finish after the page loaded another view drop their output."""

    def __init__(self) -> None:
        self.view: ExploreView | None = None
        # Counts this page's loads. The page sends the count it last got back with every table and
        # item event, so an event dispatched under an earlier load (its pickers' values belong to
        # that load) is dropped even when the server handles it after the new load.
        self.generation = 0

    def current(self, generation: float | None) -> bool:
        """Whether an event that carries this load count belongs to the view the page shows now."""
        return generation is None or int(generation) == self.generation


class Studio:
    """Both tabs' handlers (Gradio calls the bound methods); Explore's state is per visitor."""

    def __init__(self, results: list[str], data: str | None, asker: Asker, resamples: int = STUDIO_RESAMPLES,
                 max_new_tokens: int = UI_DEFAULT_MAX_NEW_TOKENS, restrict_folders: bool = False,
                 turns: access.TurnQueue | None = None) -> None:
        self.asker, self.resamples, self.data_arg = asker, resamples, data
        self.max_new_tokens = max(1, min(UI_MAX_NEW_TOKENS, max_new_tokens))
        self.examples: list[Path] = []
        self.policy = access.FolderPolicy.under(results) if restrict_folders else access.FolderPolicy()
        self.turns = turns or access.TurnQueue(ASK_TURNS_PER_VISITOR, ASK_MAX_WAITING)
        self.default = self._view(views.load_results(results), [Path(p) for p in results])

    def _view(self, loaded: views.LoadedRuns, paths: list[Path]) -> ExploreView:
        """A view of ``loaded``; images its runs name are opened under the served roots (or, on
        an open Studio, under the folders loaded)."""
        if self.policy.roots is not None:
            roots = list(self.policy.roots)
        else:
            real = [p.resolve() for p in paths if p.exists()]
            roots = [p if p.is_dir() else p.parent for p in real]
        return ExploreView(loaded, self.data_arg, self.resamples, roots)

    def open(self, typed: list[str]) -> ExploreView:
        """The view of the typed folders: each one the policy refuses gets the same message,
        whether it exists or not; runs whose files lie outside the roots are refused too."""
        allowed, refused = [], []
        for text in typed:
            path = self.policy.resolve(text)
            (refused.append(self.policy.refusal(text)) if path is None else allowed.append(path))
        loaded = views.load_results(allowed)
        if self.policy.restricted:
            outside = [r for r in loaded.runs if not all(self.policy.allows(f) for f in _run_files(r))]
            refused += [f"`{r.name}`: its files lie outside the folders this Studio serves" for r in outside]
            loaded = views.LoadedRuns([r for r in loaded.runs if all(r is not o for o in outside)], loaded.errors)
        return self._view(views.LoadedRuns(loaded.runs, refused + loaded.errors), allowed)

    # The --results view, as tests and `ecgbench studio` read it.
    @property
    def loaded(self) -> views.LoadedRuns:
        return self.default.loaded

    @property
    def run_names(self) -> list[str]:
        return self.default.run_names

    def rows(self, subset: str) -> list[views.ItemRow]:
        return self.default.rows(subset)

    def message(self) -> str:
        return self.default.message()

    # ------------------------------------------------------------------ Explore handlers

    def filters(self, run_a: str | None, run_b: str | None, mode: str, flags: list[str], text: str) -> views.Filters:
        flags = flags or []
        ab = FILTER_A_WRONG_B_RIGHT in flags
        return views.Filters(wrong_in=run_a if ab else None, right_in=run_b if ab else None, mode=mode or "strict",
                             unparsed="unparsed" in flags, invalid="invalid" in flags,
                             failed="generation failed" in flags, judge_failed="judge failed" in flags, text=text or "")

    def table(self, visitor: Visitor | None, subset: str | None, run_a: str | None, run_b: str | None, mode: str,
              flags: list[str], text: str, page: float | None, generation: float | None = None) -> tuple[Any, ...]:
        """(corpus numbers, items table, page note, page number, item picker, message) of this
        visitor's view for the current filters; nothing changes when the event was dispatched under
        an earlier load (``generation``) or the visitor loaded another view meanwhile (that load's
        own table follows)."""
        gr = _gradio()
        start = visitor.view if visitor else None
        out = self._table(start or self.default, subset, run_a, run_b, mode, flags, text, page)
        if visitor is not None and (visitor.view is not start or not visitor.current(generation)):
            return tuple(gr.skip() for _ in out)
        return out

    def _table(self, view: ExploreView, subset: str | None, run_a: str | None, run_b: str | None, mode: str,
               flags: list[str], text: str, page: float | None) -> tuple[Any, ...]:
        gr = _gradio()
        if subset not in view.subsets:  # also what a script sends: no reads, no caches for unknown names
            return "", "", "", 1, gr.update(choices=[], value=None), view.message()
        flags = flags or []
        if FILTER_A_WRONG_B_RIGHT in flags and (not run_a or not run_b):
            return (view.corpus(subset), '<p class="bad">Pick run A and run B for "A wrong, B right".</p>', "", 1,
                    gr.update(choices=[], value=None), view.message())
        shown = views.filter_rows(view.rows(subset), self.filters(run_a, run_b, mode, flags, text))
        pg = views.paginate(shown, int(page or 1))
        thumbs = {row.id: t for row in pg.rows if (t := view.thumbnail(subset, row.id))}
        note = f"page {pg.number} of {pg.count}, {pg.total} of {len(view.rows(subset))} items"
        no_samples = [r.name for r in view.loaded.runs if subset in r.subsets and r.subsets[subset].records is None]
        if no_samples:  # aggregated numbers only: lmms-eval ran without --log_samples
            note += f"; no per-item samples in {', '.join(no_samples)} (run lmms-eval with --log_samples)"
        ids = [row.id for row in pg.rows]
        return (view.corpus(subset), views.table_html(pg, view.run_names, thumbs, mode or "strict"), note, pg.number,
                gr.update(choices=ids, value=None), view.message())

    def item(self, visitor: Visitor | None, subset: str | None, item_id: str | None,
             generation: float | None = None) -> tuple[Any, str]:
        """(full-size image, item view) of one item of this visitor's view; nothing changes when
        the event was dispatched under an earlier load or the visitor loaded another view meanwhile."""
        start = visitor.view if visitor else None
        out = self._item(start or self.default, subset, item_id)
        if visitor is not None and (visitor.view is not start or not visitor.current(generation)):
            gr = _gradio()
            return gr.skip(), gr.skip()
        return out

    def _item(self, view: ExploreView, subset: str | None, item_id: str | None) -> tuple[Any, str]:
        if subset not in view.subsets or not item_id:
            return None, ""
        row = next((r for r in view.rows(subset) if r.id == item_id), None)
        if row is None:
            return None, f'<p class="bad">No item {item_id} in {subset}.</p>'
        image = view.image(subset, item_id)
        body = views.item_html(row, view.run_names)
        if image is None:
            why = ("the run's data is not at hand (start Studio with --data)" if view.items.source is None else
                   "not in the data copy, and no image the run names lies under the results folders or the data copy")
            body = f'<p class="muted">Missing image: {why}.</p>' + body
        return image, body

    def reload(self, visitor: Visitor, folder: str, mode: str, flags: list[str], text: str) -> tuple[Any, ...]:
        """This visitor's view of the typed folder(s), in place of the one it had: the run list, the
        pickers and the first page of the table (with the message) in one update, so the page never
        shows a new message over an old run's rows, nor a previous error over new rows. A table or
        item event still running for the old view is dropped when it ends (``table``/``item``)."""
        gr = _gradio()
        view = self.open([p for p in (folder or "").split() if p])
        visitor.generation += 1
        visitor.view = view
        names, subsets = view.run_names, views.subsets_of(view.loaded.runs)
        subset = subsets[0] if subsets else None
        run_a, run_b = (names[0], names[-1]) if names else (None, None)
        return (visitor.generation, view.runs_markdown(), gr.update(choices=subsets, value=subset),
                gr.update(choices=names, value=run_a), gr.update(choices=names, value=run_b),
                *self._table(view, subset, run_a, run_b, mode, flags, text, 1))

    # ------------------------------------------------------------------ Ask

    def ask(self, upload: str | None, question: str, turns: list[list[str]] | None, max_new_tokens: float,
            temperature: float, visitor: str = "") -> Iterator[tuple[Any, ...]]:
        """Stream the answer of one turn: yields (chat messages, turns, facts, message, question box).

        The turn waits for the model in line (``self.turns``): one running at a time, at most
        ASK_TURNS_PER_VISITOR per ``visitor`` (a page's session) and ASK_MAX_WAITING in all."""
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
            processed = None if self.asker.served else model.engine.process_image(image)
        except ask.AskError as exc:
            yield chat, turns, None, f"**Cannot ask**: {exc}", question
            return
        except Exception as exc:  # noqa: BLE001 - image processing failures
            yield chat, turns, None, f"**Cannot ask**: the image cannot be processed: {ask._one_line(exc)}", question
            return
        try:
            ticket = self.turns.enter(visitor)
        except access.Busy as exc:
            yield chat, turns, None, f"**Cannot ask now**: {exc}", question
            return
        try:
            ahead = self.turns.ahead(ticket)
            while ahead:
                yield chat, turns, None, f"waiting for the model: {ahead} question(s) before yours", question
                ahead = self.turns.wait(ticket, STATUS_POLL_S)
            answer = self._answer_served if self.asker.served else self._answer
            yield from answer(model, image, processed, upload, question, turns, max_new_tokens, temperature)
        finally:
            self.turns.leave(ticket)

    def _answer(self, model: Any, image: Any, processed: Any, upload: str | None, question: str,
                turns: list[list[str]], max_new_tokens: float, temperature: float) -> Iterator[tuple[Any, ...]]:
        """Generate one turn (this turn holds the model), streaming the answer into the page."""
        from transformers import TextIteratorStreamer

        from pulse_models import ask
        from pulse_models.engine import GenSettings

        # The page's sliders bound these; a scripted client gets the same bounds.
        settings = GenSettings(max_new_tokens=max(1, min(UI_MAX_NEW_TOKENS, int(max_new_tokens))),
                               temperature=min(UI_MAX_TEMPERATURE, max(0.0, float(temperature))),
                               top_p=self.asker.options.top_p, num_beams=1)
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

    def _answer_served(self, model: Any, image: Any, processed: Any, upload: str | None, question: str,
                       turns: list[list[str]], max_new_tokens: float, temperature: float) -> Iterator[tuple[Any, ...]]:
        """One turn of a served model: a streamed chat-completions request (the earlier turns as messages)."""
        from pulse_models import ask
        from pulse_models.served import Reply, ServedError, image_data_url

        # The page's sliders bound these; a scripted client gets the same bounds.
        settings = argparse.Namespace(max_new_tokens=max(1, min(UI_MAX_NEW_TOKENS, int(max_new_tokens))),
                                      temperature=min(UI_MAX_TEMPERATURE, max(0.0, float(temperature))), top_p=None)
        history = [(q, a) for q, a in turns] + [(question, None)]
        reply = Reply("")
        try:
            for _ in model.stream(history, image_data_url(image), settings.max_new_tokens, settings.temperature,
                                  reply=reply):
                yield _messages(turns + [[question, reply.text]]), turns, None, "generating ...", ""
        except ServedError as exc:
            yield _messages(turns), turns, None, f"**generation failed**: {exc}", question
            return
        turns.append([question, reply.text])
        facts = ask.served_record(model, settings, image, len(turns), question, reply, Path(upload).name)
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
                                temperature = gr.Slider(0.0, UI_MAX_TEMPERATURE, value=0.0, step=0.05, label="temperature (0 = greedy)")
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
                    runs_md = gr.Markdown(self.default.runs_markdown(), elem_id="explore-runs")
                    # This page's own Explore state (made per page): what it loads changes no other page.
                    visitor = gr.State(Visitor)
                    # The load count this page last got (see Visitor.generation); held by the page.
                    generation = gr.Number(0, visible=False, precision=0, elem_id="explore-generation")
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
            # Turns wait in self.turns (per-visitor limit, arrival order), not in Gradio's queue.
            ask_turn = _visitor_handler(self.ask)
            for trigger in (send.click, question.submit):
                trigger(ask_turn, inputs=ask_inputs, outputs=ask_outputs, concurrency_id="ask",
                        concurrency_limit=ASK_MAX_WAITING)
            clear.click(_new_conversation, outputs=[chat, turns, facts])
            # While the model loads, the status line is refreshed until it is ready (or failed).
            status_timer = gr.Timer(STATUS_POLL_S, active=not self.asker.ready.is_set())
            status_timer.tick(self.status_tick, outputs=[model_status, status_timer])
            app.load(self.status_tick, outputs=[model_status, status_timer])

            # Explore events
            table_inputs = [visitor, subset, run_a, run_b, mode, flags, search, page, generation]
            table_outputs = [corpus, table, page_note, page, item_id, explore_message]
            for control in (subset, run_a, run_b, mode, flags):
                control.change(_first_page, outputs=[page]).then(self.table, table_inputs, table_outputs)
            search.submit(_first_page, outputs=[page]).then(self.table, table_inputs, table_outputs)
            page.submit(self.table, table_inputs, table_outputs)
            prev_page.click(_step_page(-1), inputs=[page], outputs=[page]).then(self.table, table_inputs, table_outputs)
            next_page.click(_step_page(1), inputs=[page], outputs=[page]).then(self.table, table_inputs, table_outputs)
            item_id.change(self.item, inputs=[visitor, subset, item_id, generation], outputs=[item_image, item_view])
            load.click(self.reload, inputs=[visitor, folder, mode, flags, search],
                       outputs=[generation, runs_md, subset, run_a, run_b, *table_outputs])
            app.load(self.table, table_inputs, table_outputs)
        return app


def _visitor_handler(ask: Any) -> Any:
    """``ask`` as a Gradio handler that knows its visitor (the page's session)."""
    gr = _gradio()

    def ask_turn(upload: Any, question: Any, turns: Any, max_new_tokens: Any, temperature: Any,
                 request: Any = None) -> Iterator[tuple[Any, ...]]:
        visitor = getattr(request, "session_hash", None) or getattr(getattr(request, "client", None), "host", "")
        yield from ask(upload, question, turns, max_new_tokens, temperature, visitor=str(visitor or ""))

    # Real objects, not the module's postponed strings: Gradio injects the request by this annotation.
    ask_turn.__annotations__ = {"request": gr.Request}
    return ask_turn


def _run_files(run: Any) -> list[Path]:
    """Every file a run was read from: results files, samples files, added judge records."""
    files = list(run.parts or [run.results_file])
    for sr in run.subsets.values():
        files += [f for f in (sr.samples_file, sr.judge_file) if f is not None]
    return files


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


LAUNCH_CHECK_S = 60.0  # how long launch() waits for the new server to answer its own first request


def _patient_url_ok(url: str) -> bool:
    """Gradio's start-up check (``gradio.networking.url_ok``), more patient. Gradio's gives up at the
    first request that takes over 3 s and then refuses to start ("When localhost is not accessible, a
    shareable link must be created"): on a machine whose cores are busy (a shared GPU box, CI
    beside other jobs) a healthy local server fails it. Same statuses, retried until LAUNCH_CHECK_S."""
    import httpx

    deadline = time.monotonic() + LAUNCH_CHECK_S
    while True:
        try:
            if httpx.head(url, timeout=10, verify=False).status_code in (200, 401, 301, 302, 303, 307, 308):
                return True
        except (ConnectionError, httpx.ConnectError, httpx.TimeoutException):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def launch(studio: Studio, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, block: bool = True) -> Any:
    """Start the server; returns the Gradio app (``app.local_url``). ``port`` 0 or None: a free port."""
    app = studio.build()
    app.queue(default_concurrency_limit=1, max_size=QUEUE_MAX_SIZE)
    if not port:
        import socket

        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    examples = sorted({str(p.parent) for p in studio.examples})
    from gradio import networking

    # Gradio 6 offers no option for its start-up check's patience: swap the module function that
    # Blocks.launch calls for the duration of the launch (tests/test_studio_served.py once failed
    # here at a load average of 12).
    hasty, networking.url_ok = networking.url_ok, _patient_url_ok
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, share=False,
                   ssr_mode=False, theme=theme(), css=CSS, max_file_size=f"{2 * MAX_UPLOAD_MB}mb",
                   allowed_paths=examples or None, footer_links=[], show_error=False)
    finally:
        networking.url_ok = hasty
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
    from pulse_models.ask import add_served_arguments
    from pulse_models.loading import ATTN_IMPLEMENTATIONS, CONV_TEMPLATES, DTYPES, HISTORY_MODES

    parser.add_argument("--model", metavar="DIR_OR_ID",
                        help="model for the Ask tab (as `--model pulse` loads it); or --api-base/--api-model")
    parser.add_argument("--results", nargs="+", default=[], metavar="DIR",
                        help="lmms-eval output folder(s) or results files for the Explore tab")
    parser.add_argument("--data", metavar="DIR",
                        help="ECGBench copy the runs read (questions and images); default $ECGBENCH_DATA, else the hub cache")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only). On loopback Explore's "
                             "folder box opens any folder this user can read, as a local tool does; bound beyond "
                             "loopback (e.g. 0.0.0.0) it opens only folders under --results")
    folders = parser.add_mutually_exclusive_group()
    folders.add_argument("--allow-any-folder", action="store_true",
                         help="let the folder box open any folder this server's user can read, also when served "
                              "beyond loopback (on loopback, the default, it does so already)")
    folders.add_argument("--results-folders-only", action="store_true",
                         help="restrict the folder box to folders under --results also on loopback (a Studio "
                              "reached through a reverse proxy or an SSH tunnel is served all the same)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--resamples", type=int, default=STUDIO_RESAMPLES, help="bootstrap resamples of the corpus numbers")
    parser.add_argument("--max-new-tokens", type=int, default=UI_DEFAULT_MAX_NEW_TOKENS,
                        help=f"Ask's initial max new tokens (default {UI_DEFAULT_MAX_NEW_TOKENS}; the page has a slider)")
    add_served_arguments(parser)
    model = parser.add_argument_group("model (as lmms-eval --model pulse)")
    model.add_argument("--dtype", choices=DTYPES, default=None)
    model.add_argument("--device-map", default=None, help="one device, e.g. cuda:0 or cpu (default: cuda if present)")
    model.add_argument("--attn-implementation", default="sdpa", choices=ATTN_IMPLEMENTATIONS)
    model.add_argument("--conv-template", default="auto", choices=CONV_TEMPLATES)
    model.add_argument("--arena-history", default="standard", choices=HISTORY_MODES)
    model.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (HF models)")


def model_options(args: argparse.Namespace) -> argparse.Namespace:
    """The options `pulse_models.ask.load` reads, and the protocol's generation defaults (Ask's
    turns take top_p from here; the page sets max new tokens and temperature)."""
    from pulse_models import ask

    return argparse.Namespace(
        dtype=args.dtype, attn_implementation=args.attn_implementation, device=None, device_map=args.device_map,
        conv_template=args.conv_template, arena_history=args.arena_history, trust_remote_code=args.trust_remote_code,
        max_new_tokens=ask.DEFAULT_MAX_NEW_TOKENS, temperature=ask.DEFAULT_TEMPERATURE, top_p=None,
        num_beams=ask.DEFAULT_NUM_BEAMS)


def asker_from_args(args: argparse.Namespace) -> Asker:
    """The Ask tab's model: the served one (--api-base/--api-model), else --model (or none)."""
    if args.api_base or args.api_model:
        from pulse_models.served import ServedModel

        return Asker(None, model_options(args), ServedModel.from_env(args.api_base, args.api_model, args.api_timeout))
    return Asker(args.model, model_options(args))


def folder_policy_restricted(host: str, allow_any_folder: bool = False, results_folders_only: bool = False) -> bool:
    """Whether the folder box is limited to the --results folders: served beyond loopback unless
    --allow-any-folder, or on request (--results-folders-only)."""
    if results_folders_only:
        return True
    return not allow_any_folder and not access.is_loopback(host)


def run(args: argparse.Namespace) -> int:
    from pulse_models.ask import AskError, check_served

    if args.resamples < 0:
        print("ecgbench studio: --resamples must be >= 0", file=sys.stderr)
        return 2
    try:
        if args.api_base or args.api_model:
            check_served(args)
    except AskError as exc:
        print(f"ecgbench studio: {exc}", file=sys.stderr)
        return 2
    restrict = folder_policy_restricted(args.host, args.allow_any_folder, args.results_folders_only)
    studio = Studio(list(args.results), args.data, asker_from_args(args), args.resamples,
                    args.max_new_tokens, restrict_folders=restrict)
    if restrict:
        print("ecgbench studio: the folder box opens folders under --results only"
              + ("" if studio.policy.roots else " (none readable: it opens nothing)"), file=sys.stderr)
    for err in studio.loaded.errors:
        print(f"ecgbench studio: cannot read {err}", file=sys.stderr)
    launch(studio, args.host, args.port, block=True)
    return 0
