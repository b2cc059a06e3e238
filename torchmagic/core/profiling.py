"""Run ``torch.profiler`` around code or around N optimizer steps, and read the trace once.

``ProfileSession`` is a context manager: CPU activity always, CUDA activity when CUDA is
available (synchronised at start, at each step and at the end so device times are complete).
With ``steps`` it follows a ``torch.profiler.schedule`` stepped by a global optimizer step
post-hook, so an unchanged training loop is profiled over its steps. Whatever way the code
ends (completed, exception, Ctrl-C) the profiler is stopped, the hook removed, and a
``ProfileResult`` built from what was collected (``profile_trace`` reads the trace).
"""

from __future__ import annotations

import os
import time
import warnings
from types import TracebackType
from typing import Any

import torch

from torchmagic.core import tbexport
from torchmagic.core.attachments import Attachments
from torchmagic.core.compiled import eager_only
from torchmagic.core.native_log import kineto_notes_dropped
from torchmagic.core.profile_result import ProfileResult, set_last_profile
from torchmagic.core.profile_trace import TIMELINE_EVENTS, read_trace
from torchmagic.core.safe_paths import check_run_dir, check_trace_path, private_dir, trace_file_name, write_new


class ProfilerBusy(RuntimeError):
    """Another torch profiler is already running in this process."""


class ProfileSession:
    """Profile the code run inside ``with``; ``result`` holds the ``ProfileResult`` afterwards.

    Keyword-only options follow ``torch.profiler.profile``: ``record_shapes``,
    ``profile_memory``, ``with_stack``, ``with_modules`` (which also records Python stacks:
    for eager modules that is where the module names live). ``steps`` (with ``wait`` and
    ``warmup``) profiles that many optimizer steps. ``trace_path`` or ``logdir`` choose where
    the Chrome trace goes (a new file in a per-user temporary folder by default; a ``trace_path``
    naming a directory gets a new file inside it; an existing file is refused, never
    overwritten); bad paths raise ValueError here, before anything runs. ``timeline_events`` caps the events
    kept for the timeline (the longest are kept); ``user_files`` maps file names of the profiled
    code to labels ("cell") so its frames read as "cell:3 <module>" in the source-line grouping.
    """

    def __init__(
        self,
        *,
        steps: int | None = None,
        wait: int = 0,
        warmup: int = 0,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        with_modules: bool = False,
        trace_path: str | None = None,
        logdir: str | None = None,
        run_name: str | None = None,
        timeline_events: int = TIMELINE_EVENTS,
        user_files: dict[str, str] | None = None,
    ) -> None:
        if steps is not None and steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if wait < 0 or warmup < 0:
            raise ValueError("wait and warmup must be 0 or more")
        self.steps, self.wait, self.warmup = steps, wait, warmup
        self.options = dict(
            record_shapes=record_shapes,
            profile_memory=profile_memory,
            with_stack=with_stack,
            with_modules=with_modules,
            steps=steps,
            wait=wait,
            warmup=warmup,
        )
        if timeline_events < 0:
            raise ValueError(f"timeline_events must be 0 or more, got {timeline_events}")
        # Paths are checked (and missing folders made) now, before any code runs: a result is
        # never lost afterwards to a path that could not be written.
        self.trace_path = None if trace_path is None else check_trace_path(trace_path, "trace_path")
        self.logdir = None if logdir is None else tbexport.check_logdir(logdir, "logdir")
        if run_name is not None and logdir is None:
            raise ValueError("run_name needs logdir")
        if self.logdir is not None:
            check_run_dir(self.logdir, run_name, "run_name")
        self.run_name = run_name
        if self.trace_path is None and self.logdir is None:
            default_trace_dir()  # a planted symlink or a foreign folder is refused now, not after the run
        self.timeline_events = timeline_events
        self.user_files = dict(user_files or {})
        self.steps_seen = 0
        self.collected = False
        self.result: ProfileResult | None = None
        self._prof: Any = None
        self._attachments = Attachments()
        self._t0 = 0.0
        self._cuda = False

    # ------------------------------------------------------------------ run
    def __enter__(self) -> ProfileSession:
        if torch.autograd.profiler._is_profiler_enabled:
            raise ProfilerBusy("another torch profiler is already running; stop it first")
        from torch.profiler import ProfilerActivity, profile, schedule

        self._cuda = torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self._cuda else [])
        stacks = bool(self.options["with_stack"] or self.options["with_modules"])
        plan = None
        if self.steps:
            with warnings.catch_warnings():  # "won't be using warmup": --warmup 0 is the user's choice
                warnings.simplefilter("ignore", UserWarning)
                plan = schedule(wait=self.wait, warmup=self.warmup, active=self.steps, repeat=1)
        self._prof = profile(
            activities=activities,
            schedule=plan,
            on_trace_ready=self._on_trace_ready,
            record_shapes=bool(self.options["record_shapes"]),
            profile_memory=bool(self.options["profile_memory"]),
            with_stack=stacks,
            with_modules=bool(self.options["with_modules"]),
            # Without the verbose config torch 2.x records Python frames but attaches no stack
            # to ops (neither in the trace nor in FunctionEvents).
            experimental_config=torch._C._profiler._ExperimentalConfig(verbose=True) if stacks else None,
        )
        if self.steps:
            from torch.optim.optimizer import register_optimizer_step_post_hook

            self._attachments.hook(register_optimizer_step_post_hook(eager_only(self._on_step)))
        self._sync()
        try:
            with kineto_notes_dropped():
                self._prof.start()
        except BaseException:
            self._attachments.detach()
            raise
        self._t0 = time.perf_counter()
        return self

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps_seen += 1
        if self.steps and self.steps_seen <= self.wait + self.warmup + self.steps:
            self._sync()
            with kineto_notes_dropped():  # the schedule starts and stops the profiler inside step()
                self._prof.step()

    def _on_trace_ready(self, prof: Any) -> None:
        self.collected = True

    def _sync(self) -> None:
        if self._cuda and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # unannotated in torch
            torch.cuda.synchronize()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        wall = time.perf_counter() - self._t0
        try:
            try:
                self._sync()
            except Exception:  # noqa: BLE001 - a failed device must not keep the profiler running
                pass
            try:
                with kineto_notes_dropped():
                    self._prof.stop()
            except Exception:  # noqa: BLE001
                pass
        finally:
            self._attachments.detach()
            _force_profiler_off()
        status = "completed"
        if exc_type is not None:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        self.result = self._collect(status, wall, None if exc is None else f"{type(exc).__name__}: {exc}")
        set_last_profile(self.result)

    # ------------------------------------------------------------------ collect
    def _collect(self, status: str, wall: float, error: str | None) -> ProfileResult:
        t = time.perf_counter()
        kineto = getattr(getattr(self._prof, "profiler", None), "kineto_results", None)
        result = ProfileResult(status=status, error=error, options=dict(self.options), wall_s=wall)
        result.steps_seen = self.steps_seen
        if self.steps:
            result.steps_profiled = max(0, min(self.steps_seen - self.wait - self.warmup, self.steps))
        if kineto is None:
            result.status = status if status != "completed" else "empty"
            result.analysis_s = time.perf_counter() - t
            return result
        read_trace(
            kineto.events(),
            result,
            shapes=bool(self.options["record_shapes"]),
            stacks=_stacks(self.options),
            timeline_events=self.timeline_events,
            user_files=self.user_files,
        )
        self._export(result)
        result.analysis_s = time.perf_counter() - t
        return result

    def _export(self, result: ProfileResult) -> None:
        """Write the Chrome trace once: into the TensorBoard run when there is a logdir.

        A write that fails anyway (disk full, a folder removed meanwhile) keeps the result and
        says so in ``trace_error``; ``trace_path`` only ever names a file that was written.
        """
        try:
            if self.logdir is not None:
                run_dir, path = tbexport.write_run(self._prof.export_chrome_trace, self.logdir, self.run_name)
                result.logdir, result.run_dir, result.trace_path = self.logdir, run_dir, path
                if self.trace_path:
                    import shutil

                    result.trace_path = write_new(lambda p: shutil.copyfile(path, p), self.trace_path)
                return
            path = self.trace_path or os.path.join(default_trace_dir(), trace_file_name())
            result.trace_path = write_new(self._prof.export_chrome_trace, path)
        except Exception as exc:  # noqa: BLE001 - torch reports some write failures as RuntimeError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.trace_error = f"the trace was not written: {reason}"


def _stacks(options: dict[str, Any]) -> bool:
    return bool(options.get("with_stack") or options.get("with_modules"))


def _force_profiler_off() -> None:
    """Belt and braces: a profiler stopped half-way (Ctrl-C inside stop) must not stay on."""
    if torch.autograd.profiler._is_profiler_enabled:
        try:
            torch.autograd.profiler._disable_profiler()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
        torch.autograd.profiler._is_profiler_enabled = False


def default_trace_dir() -> str:
    """The per-user folder for traces without ``trace_path``: ``<tempdir>/torchmagic-<uid>/profiles``."""
    return private_dir("profiles")


def default_trace_path() -> str:
    return os.path.join(default_trace_dir(), trace_file_name())
