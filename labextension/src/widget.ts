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
import {
  ColumnBatch,
  messageKind,
  MODULE_NAME,
  Progress,
  REFRESH,
  refreshProblem,
  RefreshMessage,
  SECTIONS
} from './protocol';
import { VERSION as PACKAGE_VERSION } from './version';


export type Columns = { [column: string]: Float32Array };

/** A ColumnBatch with its buffers decoded. */
export interface IDecodedBatch {
  source: string;
  data: Columns;
  rollover: number | null;
}

/** What one refresh changes, decoded. `progress` undefined means unchanged. */
export interface IDecodedRefresh {
  sections: { [section: string]: string };
  progress: Progress | null | undefined;
  streams: IDecodedBatch[];
  replace: IDecodedBatch[];
}

/**
 * What the kernel did to one bokeh source since the plot was rendered: either replaced its data
 * (`replaced` then holds the whole current data) or streamed rows into it (`streamed`, already
 * cut to the rollover, to be streamed on top of the rendered data).
 */
interface ISourceLog {
  replaced: Columns | null;
  streamed: Columns | null;
  rollover: number | null;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function toFloat32(buffer: ArrayBuffer | ArrayBufferView): Float32Array {
  const view =
    buffer instanceof ArrayBuffer
      ? new DataView(buffer)
      : new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const n = Math.floor(view.byteLength / 4);
  if (LITTLE_ENDIAN) {
    // Copy: the buffer may be shared with the rest of the message and unaligned.
    const bytes = new Uint8Array(view.buffer, view.byteOffset, n * 4).slice();
    return new Float32Array(bytes.buffer);
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = view.getFloat32(i * 4, true);
  }
  return out;
}

function decodeBatch(batch: ColumnBatch, buffers: Float32Array[]): IDecodedBatch {
  const data: Columns = {};
  for (const [name, index] of Object.entries(batch.columns)) {
    data[name] = buffers[index];
  }
  return { source: batch.source, data, rollover: batch.rollover ?? null };
}

function concat(a: Float32Array, b: Float32Array, rollover: number | null): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return rollover !== null && out.length > rollover ? out.slice(out.length - rollover) : out;
}

function appendColumns(old: Columns | null, added: Columns, rollover: number | null): Columns {
  const out: Columns = {};
  for (const [name, column] of Object.entries(old ?? {})) {
    out[name] = column;
  }
  for (const [name, column] of Object.entries(added)) {
    out[name] = concat(out[name] ?? new Float32Array(0), column, rollover);
  }
  return out;
}

function copyColumns(columns: Columns): Columns {
  const out: Columns = {};
  for (const [name, column] of Object.entries(columns)) {
    out[name] = column.slice();
  }
  return out;
}

export class DashboardModel extends DOMWidgetModel {
  defaults(): any {
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

  private _logs!: Map<string, ISourceLog>;
  private _plotModel!: WidgetModel | null;

  initialize(attributes: any, options: any): void {
    super.initialize(attributes, options);
    this.sections = new Map();
    this.progress = null;
    this.refreshCount = 0;
    this._logs = new Map();
    this._plotModel = null;
    this.on('msg:custom', this._onCustom, this);
    this.on('change:plot', this._watchPlot, this);
    this._watchPlot();
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
    const message = content as RefreshMessage;
    const floats = raw.map(toFloat32);
    const refresh: IDecodedRefresh = {
      sections: message.sections ?? {},
      // null (or absent) leaves the progress as it is, like an absent section.
      progress: message.progress ?? undefined,
      streams: (message.streams ?? []).map(b => decodeBatch(b, floats)),
      replace: (message.replace ?? []).map(b => decodeBatch(b, floats))
    };
    this._record(refresh);
    this.refreshCount += 1;
    this.trigger('torchmagic:refresh', refresh);
  }

  private _record(refresh: IDecodedRefresh): void {
    for (const [name, html] of Object.entries(refresh.sections)) {
      this.sections.set(name, html);
    }
    if (refresh.progress !== undefined) {
      this.progress = refresh.progress;
    }
    for (const batch of refresh.replace) {
      this._logs.set(batch.source, { replaced: batch.data, streamed: null, rollover: null });
    }
    for (const batch of refresh.streams) {
      const log = this._logs.get(batch.source) ?? { replaced: null, streamed: null, rollover: null };
      if (log.replaced !== null) {
        log.replaced = appendColumns(log.replaced, batch.data, batch.rollover);
      } else {
        log.streamed = appendColumns(log.streamed, batch.data, batch.rollover);
        log.rollover = batch.rollover;
      }
      this._logs.set(batch.source, log);
    }
  }

  /** Everything streamed or replaced since the plot was rendered, as one refresh. */
  replay(): IDecodedRefresh {
    const streams: IDecodedBatch[] = [];
    const replace: IDecodedBatch[] = [];
    for (const [source, log] of this._logs) {
      if (log.replaced !== null) {
        replace.push({ source, data: log.replaced, rollover: null });
      } else if (log.streamed !== null) {
        streams.push({ source, data: log.streamed, rollover: log.rollover });
      }
    }
    return { sections: {}, progress: undefined, streams, replace };
  }
}

/**
 * jupyter_bokeh's view sends every change of its BokehJS document to the kernel, whatever the
 * event's `sync` flag: our own streams, and also what BokehJS derives from them (a DataRange1d
 * recomputes `start`/`end` after each stream, which is one message per axis per refresh). The
 * kernel is busy running the training cell and would only read them afterwards, all at once.
 *
 * The dashboard's plots are output only (a Stop control works by interrupting the kernel, see
 * DESIGN.md section 3), so their view sends nothing back. Changes from the kernel still arrive.
 * Returns false when the view is not the jupyter_bokeh view we know.
 */
function muteBokehView(view: any): boolean {
  if (view.__torchmagicMuted) {
    return true;
  }
  if (typeof view._change_event !== 'function') {
    return false;
  }
  view._change_event = function (): void {
    // Deliberately nothing: see above.
  };
  view.__torchmagicMuted = true;
  return true;
}

/** The BokehJS document of a jupyter_bokeh view, if it has rendered. */
function bokehDocument(view: any): any | null {
  const doc = view?._document;
  return doc && typeof doc.get_model_by_id === 'function' ? doc : null;
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
  private _sectionEls = new Map<string, HTMLElement>();
  private _progressEl!: HTMLElement;
  private _barEl!: HTMLElement;
  private _labelEl!: HTMLElement;
  private _plotEl!: HTMLElement;
  private _child: DOMWidgetView | null = null;
  private _plotGeneration = 0;
  private _warned = new Set<string>();

  render(): void {
    this.el.classList.add('torchmagic-dashboard');
    const make = (cls: string): HTMLElement => {
      const el = document.createElement('div');
      el.className = cls;
      this.el.appendChild(el);
      return el;
    };
    const section = (name: string): void => {
      const el = make(`torchmagic-section torchmagic-section-${name}`);
      el.dataset.section = name;
      this._sectionEls.set(name, el);
    };
    section(SECTIONS[0]);
    this._progressEl = make('torchmagic-progress torchmagic-hidden');
    this._progressEl.setAttribute('role', 'progressbar');
    this._progressEl.setAttribute('aria-valuemin', '0');
    this._progressEl.setAttribute('aria-valuemax', '100');
    const track = document.createElement('div');
    track.className = 'torchmagic-progress-track';
    this._barEl = document.createElement('div');
    this._barEl.className = 'torchmagic-progress-bar';
    track.appendChild(this._barEl);
    this._labelEl = document.createElement('div');
    this._labelEl.className = 'torchmagic-progress-label';
    this._progressEl.append(track, this._labelEl);
    section(SECTIONS[1]);
    this._plotEl = make('torchmagic-plot');
    for (const name of SECTIONS.slice(2)) {
      section(name);
    }

    const model = this.model as DashboardModel;
    this._applySections(Object.fromEntries(model.sections));
    this._applyProgress(model.progress);
    this._applyTitle();
    this.listenTo(model, 'torchmagic:refresh', this._onRefresh);
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

  remove(): any {
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
    for (const [name, html] of Object.entries(sections)) {
      const el = this._sectionEls.get(name);
      if (el === undefined) {
        this._warnOnce(`section:${name}`, `torchmagic: unknown dashboard section ${name}`);
        continue;
      }
      el.innerHTML = html;
    }
  }

  private _applyProgress(progress: Progress | null): void {
    if (progress === null) {
      this._progressEl.classList.add('torchmagic-hidden');
      return;
    }
    this._progressEl.classList.remove('torchmagic-hidden');
    const fraction = progress.fraction;
    if (fraction === null || fraction === undefined) {
      this._progressEl.classList.add('torchmagic-progress-indeterminate');
      this._barEl.style.width = '';
      this._progressEl.removeAttribute('aria-valuenow');
    } else {
      const percent = Math.min(100, Math.max(0, fraction * 100));
      this._progressEl.classList.remove('torchmagic-progress-indeterminate');
      this._barEl.style.width = `${percent}%`;
      this._progressEl.setAttribute('aria-valuenow', percent.toFixed(1));
    }
    this._labelEl.textContent = progress.label;
  }

  private _onRefresh(refresh: IDecodedRefresh): void {
    this._applySections(refresh.sections);
    if (refresh.progress !== undefined) {
      this._applyProgress(refresh.progress);
    }
    // Before the child view exists, the model's log is replayed when it does.
    if (this._child !== null) {
      this._applyToBokeh(refresh);
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
    this._plotEl.textContent = '';
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
      this._plotEl.appendChild(note);
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
    this._plotEl.appendChild(child.el);
    if (attached) {
      MessageLoop.sendMessage(child.luminoWidget, Widget.Msg.AfterAttach);
    }
    this._child = child;
    this._applyToBokeh((this.model as DashboardModel).replay());
  }

  private _applyToBokeh(refresh: IDecodedRefresh): void {
    if (refresh.streams.length === 0 && refresh.replace.length === 0) {
      return;
    }
    const doc = bokehDocument(this._child);
    if (doc === null) {
      this._warnOnce('doc', 'torchmagic: the plot view has no BokehJS document; update skipped');
      return;
    }
    try {
      for (const batch of refresh.replace) {
        const source = this._source(doc, batch.source);
        // The source keeps the arrays it is given: give it its own copy.
        source?.setv({ data: copyColumns(batch.data) }, { sync: false });
      }
      for (const batch of refresh.streams) {
        const source = this._source(doc, batch.source);
        source?.stream(batch.data, batch.rollover ?? undefined, { sync: false });
      }
    } catch (reason) {
      console.error('torchmagic: could not apply a refresh to the plot', reason);
    }
  }

  private _source(doc: any, id: string): any | null {
    const model = doc.get_model_by_id(id);
    if (model === null || model === undefined || typeof model.stream !== 'function') {
      this._warnOnce(`source:${id}`, `torchmagic: no ColumnDataSource with id ${id} in the plot`);
      return null;
    }
    return model;
  }

  private _warnOnce(key: string, text: string): void {
    if (!this._warned.has(key)) {
      this._warned.add(key);
      console.warn(text);
    }
  }
}
