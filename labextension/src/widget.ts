/**
 * The dashboard widget: model and view of `DashboardWidget` (torchmagic/display/widget.py).
 *
 * The kernel sends one custom message per refresh (protocol.REFRESH) with float32 columns as
 * binary buffers. The model keeps what it needs to redraw any view (the latest sections and
 * progress, and what was streamed into each bokeh source); each view applies the refresh to its
 * own child BokehModel view's BokehJS document without sending anything back to the kernel.
 * The plot's layout changes (charts joining mid-run) are the model's too, applied by each view
 * in order once its plot's views are built (plotpatches.ts).
 */

import {
  DOMWidgetModel,
  DOMWidgetView,
  ISerializers,
  unpack_models,
  WidgetModel
} from '@jupyter-widgets/base';
import { Message, MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ensureBokeh } from './bokeh';
import { applyToBokeh, hasModel, muteBokehView } from './bokehdoc';
import { decodeRefresh, IDecodedBatch, IDecodedRefresh, SourceLogs } from './columns';
import { DashboardLayout } from './layout';
import { interceptPatches, PatchFragment, PatchLog, PlotPatcher } from './plotpatches';
import {
  messageKind,
  MODULE_NAME,
  Progress,
  REFRESH,
  refreshProblem,
  RefreshMessage
} from './protocol';
import { VERSION as PACKAGE_VERSION } from './version';

export type { Columns, IDecodedBatch, IDecodedRefresh } from './columns';

/** The Backbone event by which the model hands each decoded refresh to its views. */
const REFRESH_EVENT = 'torchmagic:refresh';
/** The Backbone event by which the model tells its views of a new fragment of a plot patch. */
const PATCH_EVENT = 'torchmagic:plot-patch';

export class DashboardModel extends DOMWidgetModel {
  defaults(): ReturnType<DOMWidgetModel['defaults']> {
    return {
      ...super.defaults(),
      _model_name: 'DashboardModel',
      _model_module: MODULE_NAME,
      _model_module_version: PACKAGE_VERSION,
      _view_name: 'DashboardView',
      _view_module: MODULE_NAME,
      _view_module_version: PACKAGE_VERSION,
      plot: null,
      title: '',
      version: ''
    };
  }

  static serializers: ISerializers = {
    ...DOMWidgetModel.serializers,
    plot: { deserialize: unpack_models }
  };

  // Backbone calls initialize() from the base constructor, before class field initializers
  // would run: these fields are set there and must not have initializers.
  /** The latest HTML of every section received so far. */
  sections!: Map<string, string>;
  /** The latest progress, or null before the first one. */
  progress!: Progress | null;
  /** Number of refresh messages applied. */
  refreshCount!: number;

  /** The plot's layout changes since its render bundle (see plotpatches.ts). */
  patches!: PatchLog;

  private _logs!: SourceLogs;
  private _plotModel!: WidgetModel | null;
  private _releasePatches!: () => void;

  initialize(...args: Parameters<DOMWidgetModel['initialize']>): void {
    super.initialize(...args);
    this.sections = new Map();
    this.progress = null;
    this.refreshCount = 0;
    this._logs = new SourceLogs();
    this.patches = new PatchLog();
    this._plotModel = null;
    this._releasePatches = () => undefined;
    this.on('msg:custom', this._onCustom, this);
    this.on('change:plot', this._watchPlot, this);
    this._watchPlot();
  }

  /** Everything streamed or replaced since the plot was rendered, as one refresh. */
  replay(): IDecodedRefresh {
    return this._logs.replay();
  }

  /**
   * A new plot, or a new render bundle of the plot, is a new baseline from the kernel: what was
   * streamed before is either gone or already in it.
   */
  private _watchPlot(): void {
    if (this._plotModel !== null) {
      this.stopListening(this._plotModel, 'change:render_bundle');
      this._releasePatches();
    }
    this._newBaseline();
    const plot = this.get('plot');
    this._plotModel = plot instanceof WidgetModel ? plot : null;
    if (this._plotModel !== null) {
      this.listenTo(this._plotModel, 'change:render_bundle', this._newBaseline);
      // From the model's creation on, before any view exists: none of them is lost.
      this._releasePatches = interceptPatches(this._plotModel, fragment =>
        this._onPatchFragment(fragment)
      );
    }
  }

  private _newBaseline(): void {
    this._logs.clear();
    this.patches.clear();
  }

  private _onPatchFragment(fragment: PatchFragment): void {
    this.patches.record(fragment);
    this.trigger(PATCH_EVENT);
  }

  private _onCustom(content: unknown, buffers?: (ArrayBuffer | ArrayBufferView)[]): void {
    const kind = messageKind(content);
    if (kind !== REFRESH) {
      console.debug(`torchmagic: dashboard ignores a message of kind ${String(kind)}`);
      return;
    }
    const raw = buffers ?? [];
    const problem = refreshProblem(content, raw.length);
    if (problem !== null) {
      console.warn(`torchmagic: invalid refresh message (${problem}); ignored`);
      return;
    }
    const refresh = decodeRefresh(content as RefreshMessage, raw);
    for (const [name, html] of Object.entries(refresh.sections)) {
      this.sections.set(name, html);
    }
    if (refresh.progress !== undefined) {
      this.progress = refresh.progress;
    }
    this._logs.record(refresh);
    this.refreshCount += 1;
    this.trigger(REFRESH_EVENT, refresh);
  }
}

const FORWARDED_MESSAGES = new Set([
  'before-attach',
  'after-attach',
  'before-detach',
  'after-detach',
  'before-show',
  'after-show',
  'before-hide',
  'after-hide',
  'resize',
  'update-request'
]);

export class DashboardView extends DOMWidgetView {
  private _layout!: DashboardLayout;
  private _child: DOMWidgetView | null = null;
  private _patcher: PlotPatcher | null = null;
  /** Column data held while plot changes are applied (see _holdNew), or null when none is. */
  private _held: SourceLogs | null = null;
  private _plotGeneration = 0;
  private _warned = new Set<string>();

  render(): void {
    this._layout = new DashboardLayout(this.el);
    const model = this.model as DashboardModel;
    this._applySections(Object.fromEntries(model.sections));
    this._layout.applyProgress(model.progress);
    this._applyTitle();
    this.listenTo(model, REFRESH_EVENT, this._onRefresh);
    this.listenTo(model, PATCH_EVENT, this._onPatch);
    this.listenTo(model, 'change:plot', this._renderPlot);
    this.listenTo(model, 'change:title', this._applyTitle);
    void this._renderPlot();
  }

  /** The child plot view is no Lumino child of ours: pass it the lifecycle messages. */
  processLuminoMessage(msg: Message): void {
    super.processLuminoMessage(msg);
    if (this._child !== null && FORWARDED_MESSAGES.has(msg.type)) {
      MessageLoop.sendMessage(this._child.luminoWidget, msg);
    }
  }

  remove(): ReturnType<DOMWidgetView['remove']> {
    this._plotGeneration += 1;
    this._removeChild();
    return super.remove();
  }

  private _applyTitle(): void {
    const title = this.model.get('title');
    if (title) {
      this.el.setAttribute('aria-label', title);
    } else {
      this.el.removeAttribute('aria-label');
    }
  }

  private _applySections(sections: { [name: string]: string }): void {
    for (const name of this._layout.applySections(sections)) {
      this._warnOnce(`section:${name}`, `torchmagic: unknown dashboard section ${name}`);
    }
  }

  private _onRefresh(refresh: IDecodedRefresh): void {
    this._applySections(refresh.sections);
    if (refresh.progress !== undefined) {
      this._layout.applyProgress(refresh.progress);
    }
    // Before the child view exists, the model's log is replayed when it does.
    if (this._child !== null) {
      applyToBokeh(this._child, this._held ? this._holdNew(refresh) : refresh, this._warnOnce);
    }
  }

  /**
   * While plot changes are applied, the batches of a source not in the document yet (a patch
   * still to come adds it), or with batches held already (their order), wait; the others are
   * returned, so the plots already there go on updating.
   */
  private _holdNew(refresh: IDecodedRefresh): IDecodedRefresh {
    const held = this._held as SourceLogs;
    const child = this._child as DOMWidgetView;
    const waits = (batch: IDecodedBatch): boolean =>
      held.has(batch.source) || !hasModel(child, batch.source);
    const split = (batches: IDecodedBatch[]): [IDecodedBatch[], IDecodedBatch[]] => [
      batches.filter(waits),
      batches.filter(batch => !waits(batch))
    ];
    const [streamsHeld, streams] = split(refresh.streams);
    const [replaceHeld, replace] = split(refresh.replace);
    held.record({ sections: {}, progress: undefined, streams: streamsHeld, replace: replaceHeld });
    return { sections: {}, progress: undefined, streams, replace };
  }

  private _onPatch(): void {
    if (this._patcher !== null) {
      this._patcher.feed((this.model as DashboardModel).patches);
      this._holdWhileBusy();
    }
  }

  private _holdWhileBusy(): void {
    if (this._patcher?.busy && this._held === null) {
      this._held = new SourceLogs();
    }
  }

  /** The plot changes are applied: the column data held meanwhile follows. */
  private _onPatched = (): void => {
    const held = this._held;
    this._held = null;
    if (held !== null && this._child !== null) {
      applyToBokeh(this._child, held.replay(), this._warnOnce);
    }
  };

  private _removeChild(): void {
    this._patcher?.dispose();
    this._patcher = null;
    this._held = null;
    if (this._child !== null) {
      const child = this._child;
      this._child = null;
      const widget = child.luminoWidget;
      if (widget.isAttached) {
        if (child.el.isConnected) {
          MessageLoop.sendMessage(widget, Widget.Msg.BeforeDetach);
        }
        child.el.remove();
        MessageLoop.sendMessage(widget, Widget.Msg.AfterDetach);
      }
      child.remove();
    }
    this._layout.plotEl.textContent = '';
  }

  private async _renderPlot(): Promise<void> {
    const generation = ++this._plotGeneration;
    this._removeChild();
    const plot = this.model.get('plot');
    if (!plot) {
      return;
    }
    const bokeh = await ensureBokeh();
    if (generation !== this._plotGeneration) {
      return;
    }
    if (bokeh.origin === 'failed') {
      const note = document.createElement('div');
      note.className = 'torchmagic-plot-error';
      note.textContent = `Plots unavailable: BokehJS could not be loaded (${bokeh.error ?? ''}).`;
      this._layout.plotEl.appendChild(note);
      return;
    }
    let child: DOMWidgetView;
    try {
      child = await this.create_child_view(plot);
    } catch (reason) {
      console.error('torchmagic: could not render the dashboard plot', reason);
      return;
    }
    if (generation !== this._plotGeneration) {
      child.remove();
      return;
    }
    if (!muteBokehView(child)) {
      this._warnOnce(
        'mute',
        'torchmagic: this jupyter_bokeh version is not recognised; plot updates may be echoed to the kernel'
      );
    }
    const attached = this.luminoWidget.isAttached;
    if (attached) {
      MessageLoop.sendMessage(child.luminoWidget, Widget.Msg.BeforeAttach);
    }
    this._layout.plotEl.appendChild(child.el);
    if (attached) {
      MessageLoop.sendMessage(child.luminoWidget, Widget.Msg.AfterAttach);
    }
    this._child = child;
    const model = this.model as DashboardModel;
    this._patcher = PlotPatcher.of(child, this._warnOnce, this._onPatched);
    if (this._patcher === null) {
      this._warnOnce(
        'patch',
        'torchmagic: this jupyter_bokeh version is not recognised; charts added during a run may not show'
      );
      applyToBokeh(child, model.replay(), this._warnOnce);
      return;
    }
    // Everything so far waits for the first render's views and the patches since the bundle.
    this._held = new SourceLogs();
    this._held.record(model.replay());
    this._patcher.feed(model.patches);
  }

  private _warnOnce = (key: string, text: string): void => {
    if (!this._warned.has(key)) {
      this._warned.add(key);
      console.warn(text);
    }
  };
}
