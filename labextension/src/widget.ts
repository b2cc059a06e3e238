/**
 * The dashboard widget: model and view of `DashboardWidget` (torchmagic/display/widget.py).
 *
 * The kernel sends one custom message per refresh (protocol.REFRESH) with float32 columns as
 * binary buffers. The model keeps what it needs to redraw any view (the latest sections and
 * progress, and what was streamed into each bokeh source); each view applies the refresh to its
 * own child BokehModel view's BokehJS document without sending anything back to the kernel.
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
import { applyToBokeh, muteBokehView } from './bokehdoc';
import { decodeRefresh, IDecodedRefresh, SourceLogs } from './columns';
import { DashboardLayout } from './layout';
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

  private _logs!: SourceLogs;
  private _plotModel!: WidgetModel | null;

  initialize(...args: Parameters<DOMWidgetModel['initialize']>): void {
    super.initialize(...args);
    this.sections = new Map();
    this.progress = null;
    this.refreshCount = 0;
    this._logs = new SourceLogs();
    this._plotModel = null;
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
    }
    this._logs.clear();
    const plot = this.get('plot');
    this._plotModel = plot instanceof WidgetModel ? plot : null;
    if (this._plotModel !== null) {
      this.listenTo(this._plotModel, 'change:render_bundle', () => this._logs.clear());
    }
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
  private _plotGeneration = 0;
  private _warned = new Set<string>();

  render(): void {
    this._layout = new DashboardLayout(this.el);
    const model = this.model as DashboardModel;
    this._applySections(Object.fromEntries(model.sections));
    this._layout.applyProgress(model.progress);
    this._applyTitle();
    this.listenTo(model, REFRESH_EVENT, this._onRefresh);
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
      applyToBokeh(this._child, refresh, this._warnOnce);
    }
  }

  private _removeChild(): void {
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
    applyToBokeh(child, (this.model as DashboardModel).replay(), this._warnOnce);
  }

  private _warnOnce = (key: string, text: string): void => {
    if (!this._warned.has(key)) {
      this._warned.add(key);
      console.warn(text);
    }
  };
}
