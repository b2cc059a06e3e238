/**
 * Changes of the plot's layout from the kernel (a chart joining mid-run, curves replacing
 * others), applied to a view's BokehJS document one at a time, once its views are built.
 *
 * jupyter_bokeh sends a document change as "patch" messages (header, metadata and content, then
 * each buffer's header and bytes), and its view applies each change as soon as it is complete.
 * BokehJS builds the views of a layout asynchronously, and a change of a layout's children that
 * lands while they are being built (the plot's first render, or an earlier change still adding
 * its charts) makes the grid lay out a child that has no view yet: the layout throws and every
 * plot stays paused, its canvas never painted again. jupyter_bokeh's view also drops the patches
 * sent before it rendered. So the dashboard model takes the patches of its plot for itself
 * (interceptPatches: jupyter_bokeh's view never sees one) and keeps them since the plot's render
 * bundle (PatchLog), and each view applies them (PlotPatcher), waiting for the views of the
 * previous change before the next.
 */

import type { WarnOnce } from './bokehdoc';

/** One message of jupyter_bokeh's patch protocol: a JSON text, or a buffer's bytes. */
export type PatchFragment = string | ArrayBuffer;

/** The fragment a jupyter_bokeh custom message carries, or null for other messages. */
export function patchFragment(
  content: unknown,
  buffers?: readonly (ArrayBuffer | ArrayBufferView)[]
): PatchFragment | null {
  const message = content as { msg?: unknown; payload?: unknown } | null;
  if (message === null || typeof message !== 'object' || message.msg !== 'patch') {
    return null;
  }
  if (typeof message.payload === 'string') {
    return message.payload;
  }
  const bytes = buffers?.[0];
  if (bytes === undefined) {
    return null;
  }
  if (bytes instanceof ArrayBuffer) {
    return bytes;
  }
  // Only the view's own bytes: it may be a window on a larger buffer.
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength).slice().buffer;
}

interface ITriggers {
  trigger(event: string, ...args: unknown[]): unknown;
}

/**
 * Hands the patch fragments of the widget model `plot` to `onFragment` instead of its views,
 * from now until the returned function is called. Other custom messages reach the views as before.
 */
export function interceptPatches(
  plot: object,
  onFragment: (fragment: PatchFragment) => void
): () => void {
  const model = plot as ITriggers;
  const ownTrigger = Object.prototype.hasOwnProperty.call(model, 'trigger');
  const trigger = model.trigger;
  model.trigger = function (this: ITriggers, event: string, ...args: unknown[]): unknown {
    if (event === 'msg:custom') {
      const fragment = patchFragment(
        args[0],
        args[1] as (ArrayBuffer | ArrayBufferView)[] | undefined
      );
      if (fragment !== null) {
        onFragment(fragment);
        return this;
      }
    }
    return trigger.call(this, event, ...args);
  };
  return () => {
    if (ownTrigger) {
      model.trigger = trigger;
    } else {
      delete (model as Partial<ITriggers>).trigger;
    }
  };
}

/** The plot's patch fragments since its last render bundle, for views rendered at any time. */
export class PatchLog {
  /** A new baseline: the render bundle holds everything patched before. */
  clear(): void {
    this._fragments = [];
    this.generation += 1;
  }

  record(fragment: PatchFragment): void {
    this._fragments.push(fragment);
  }

  get fragments(): readonly PatchFragment[] {
    return this._fragments;
  }

  /** Changes on each clear(), so a view knows its position in the log no longer holds. */
  generation = 0;
  private _fragments: PatchFragment[] = [];
}

interface IPatchMessage {
  content: { [key: string]: unknown };
  buffers: Map<string, ArrayBuffer>;
}

interface IReceiver {
  consume(fragment: PatchFragment): void;
  message: IPatchMessage | null;
}

/** The parts of a BokehJS view read here: layouts' child views, plots' renderer views. */
interface IView {
  model: { renderers?: unknown };
  child_models?: unknown;
  _child_views?: unknown;
  renderer_views?: unknown;
}

interface IDocument {
  roots(): unknown[];
  apply_json_patch(content: unknown, buffers: Map<string, ArrayBuffer>): void;
  views_manager?: { get(model: unknown): IView | null } | null;
}

interface IBokehView {
  _document?: IDocument | null;
}

interface IBokehRequire {
  require(module: string): { Receiver: new () => IReceiver };
}

const BUILD_POLL_MS = 25;
const BUILD_WAIT_MS = 60000; // the first render of a large layout on a loaded machine
const CHANGE_WAIT_MS = 20000;

function delay(ms: number): Promise<void> {
  return new Promise(resolve => window.setTimeout(resolve, ms));
}

/**
 * The root views of the document once they are built (BokehJS registers a root's view when it
 * and its children are built, and lays it out at once), or null when that did not happen in time.
 */
async function builtRoots(doc: IDocument): Promise<IView[] | null> {
  for (let waited = 0; waited < BUILD_WAIT_MS; waited += BUILD_POLL_MS) {
    const views = doc.roots().map(root => doc.views_manager?.get(root) ?? null);
    if (views.every(view => view !== null)) {
      return views as IView[];
    }
    await delay(BUILD_POLL_MS);
  }
  return null;
}

/**
 * Whether every child of a layout and every renderer of a plot in `view`'s tree has its view.
 * BokehJS stores a child's view once it is built and places it in the same task, so once this
 * holds (read from a later task) a change's new views are in place and the next can follow.
 */
function viewsBuilt(view: IView): boolean {
  const children = view._child_views;
  if (Array.isArray(view.child_models) && children instanceof Map) {
    if (!view.child_models.every(model => children.has(model))) {
      return false;
    }
    if (![...children.values()].every(child => viewsBuilt(child as IView))) {
      return false;
    }
  }
  const renderers = view.model.renderers;
  const rendered = view.renderer_views;
  if (Array.isArray(renderers) && rendered instanceof Map) {
    return renderers.every(renderer => rendered.has(renderer));
  }
  return true;
}

/**
 * The patches of one jupyter_bokeh view, applied in order, each once the views of the previous
 * one are built. `busy` is true from a patch's arrival until its views are ready: the column
 * data of refreshes for that time waits (a stream may name a source the patch creates).
 */
export class PlotPatcher {
  /** The patcher of the jupyter_bokeh `view`, or null when BokehJS lacks what it uses. */
  static of(view: object, warn: WarnOnce, onIdle: () => void): PlotPatcher | null {
    const bokeh = (window as { Bokeh?: Partial<IBokehRequire> }).Bokeh;
    if (typeof bokeh?.require !== 'function' || !('_document' in view)) {
      return null;
    }
    const { Receiver } = bokeh.require('protocol/receiver');
    return new PlotPatcher(view as IBokehView, () => new Receiver(), warn, onIdle);
  }

  private constructor(
    view: IBokehView,
    newReceiver: () => IReceiver,
    warn: WarnOnce,
    onIdle: () => void
  ) {
    this._view = view;
    this._newReceiver = newReceiver;
    this._receiver = newReceiver();
    this._warn = warn;
    this._onIdle = onIdle;
    // The first render's views, before any patch.
    this._enqueue(() => this._settle());
  }

  get busy(): boolean {
    return this._pending > 0;
  }

  /** Applies the log's fragments not applied yet (all of them after a new baseline). */
  feed(log: PatchLog): void {
    if (log.generation !== this._generation) {
      this._generation = log.generation;
      this._consumed = 0;
      this._receiver = this._newReceiver();
    }
    const fragments = log.fragments;
    for (; this._consumed < fragments.length; this._consumed++) {
      this._receiver.consume(fragments[this._consumed]);
      const message = this._receiver.message;
      if (message !== null && Object.keys(message.content).length > 0) {
        this._enqueue(() => this._apply(message));
      }
    }
  }

  /** Stops applying: the view is gone. */
  dispose(): void {
    this._disposed = true;
  }

  private _enqueue(task: () => Promise<void>): void {
    this._pending += 1;
    this._chain = this._chain
      .then(() => (this._disposed ? undefined : task()))
      .catch(reason => console.error('torchmagic: could not apply a plot change', reason))
      .then(() => {
        this._pending -= 1;
        if (this._pending === 0 && !this._disposed) {
          this._onIdle();
        }
      });
  }

  private async _apply(message: IPatchMessage): Promise<void> {
    const doc = this._view._document;
    if (doc === null || doc === undefined) {
      this._warn('patch-doc', 'torchmagic: the plot view has no BokehJS document; change skipped');
      return;
    }
    doc.apply_json_patch(message.content, message.buffers);
    await this._settle();
  }

  /** Waits until the document's views are built and have acted on every change so far. */
  private async _settle(): Promise<void> {
    const doc = this._view._document;
    if (doc === null || doc === undefined) {
      return;
    }
    if (this._roots === null) {
      this._roots = await builtRoots(doc);
      if (this._roots === null) {
        this._warn(
          'patch-build',
          'torchmagic: the plot did not render in time; changes applied anyway'
        );
        this._roots = [];
      }
    }
    for (let waited = 0; !this._roots.every(viewsBuilt); waited += BUILD_POLL_MS) {
      if (waited >= CHANGE_WAIT_MS) {
        this._warn('patch-views', 'torchmagic: a plot change took long to show; going on');
        return;
      }
      await delay(BUILD_POLL_MS);
    }
  }

  private _view: IBokehView;
  private _newReceiver: () => IReceiver;
  private _receiver: IReceiver;
  private _warn: WarnOnce;
  private _onIdle: () => void;
  private _roots: IView[] | null = null;
  private _chain: Promise<void> = Promise.resolve();
  private _pending = 0;
  private _consumed = 0;
  private _generation = 0;
  private _disposed = false;
}
