/**
 * The torchmagic side panel: for each kernel that loaded torchmagic, its devices, memory now and
 * peak, the active `%%train` run (with a Stop button) and the `%memory` history.
 *
 * Everything shown comes from kernel status messages (panelmodel.ts turns them into texts);
 * text goes in through textContent only. While the panel is hidden it asks for nothing (see
 * `visibilityChanged` in index.ts).
 */

import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IBokehStatus } from './bokeh';
import { CommRegistry, IKernelEntry } from './comm';
import { ICON_ID, PANEL_ID } from './constants';
import { deviceRows, historyView, memoryLine, runView } from './panelmodel';
import { DeviceStatus, MemoryRow, RunStatus } from './protocol';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">
<path class="jp-icon3" fill="#616161" d="M8 1.2 9.9 3.1 8.6 4.4A4.9 4.9 0 1 1 4.4 6.1L6 4.5a2.6 2.6 0 1 0 1.3-.6L6.1 2.7z"/>
<circle class="jp-icon3" fill="#616161" cx="11.2" cy="3.9" r="1"/>
</svg>`;

export const torchmagicIcon = new LabIcon({ name: ICON_ID, svgstr: ICON_SVG });

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function table(className: string, header: string[], rows: string[][]): HTMLTableElement {
  const t = el('table', className);
  const head = t.createTHead().insertRow();
  for (const h of header) {
    head.appendChild(el('th', undefined, h));
  }
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      td.textContent = cell;
      td.title = cell; // the whole text where a narrow panel cuts it
    }
  }
  return t;
}

export class TorchMagicPanel extends Widget {
  constructor(
    version: string,
    private readonly _registry: CommRegistry,
    private readonly _stop: (kernelId: string) => void
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('torchmagic-panel');
    this.title.icon = torchmagicIcon;
    this.title.caption = 'torchmagic';
    this.title.label = '';

    const heading = el('h2', undefined, 'torchmagic');
    const about = el(
      'p',
      'torchmagic-panel-about',
      `Front end ${version}. Run %load_ext torchmagic in a notebook, then %%train.`
    );
    this._bokehEl = el('p', 'torchmagic-panel-bokeh', 'BokehJS: loading…');
    const kernelsHeading = el('h3', undefined, 'Kernels');
    this._kernelsEl = el('ul', 'torchmagic-panel-kernels');
    this.node.append(heading, about, this._bokehEl, kernelsHeading, this._kernelsEl);

    _registry.kernelsChanged.connect(this._render, this);
    _registry.statusChanged.connect(this._render, this);
    this._render();
  }

  /** Emitted with the new visibility when the panel is shown or hidden. */
  get visibilityChanged(): ISignal<this, boolean> {
    return this._visibilityChanged;
  }

  setBokeh(status: IBokehStatus): void {
    const where = { page: 'already on the page', server: 'served by Jupyter', failed: 'failed' };
    const version = status.version ? ` ${status.version}` : '';
    this._bokehEl.textContent = `BokehJS${version}: ${where[status.origin]}`;
    if (status.error) {
      this._bokehEl.title = status.error;
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._render();
    this._visibilityChanged.emit(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._visibilityChanged.emit(false);
  }

  private _render(): void {
    if (!this.isVisible && this._kernelsEl.childElementCount > 0) {
      return; // rendered when shown
    }
    const entries = [...this._registry.entries.values()];
    this._kernelsEl.replaceChildren(
      ...(entries.length
        ? entries.map(entry => this._kernel(entry))
        : [el('li', 'torchmagic-panel-empty', 'No kernel has loaded torchmagic yet.')])
    );
  }

  private _kernel(entry: IKernelEntry): HTMLElement {
    const li = el('li', 'torchmagic-kernel');
    li.dataset.kernelId = entry.id;
    const head = el('div', 'torchmagic-kernel-head');
    head.append(
      el('span', 'torchmagic-kernel-label', this._registry.label(entry)),
      el('span', 'torchmagic-kernel-version', `torchmagic ${entry.version}`.trim())
    );
    li.appendChild(head);
    const status = entry.status;
    if (!status) {
      li.appendChild(
        el('p', 'torchmagic-kernel-waiting', 'Waiting for the kernel (it answers between cells)…')
      );
      return li;
    }
    li.appendChild(el('p', 'torchmagic-kernel-memory', memoryLine(status)));
    li.appendChild(this._devices(status.devices));
    li.appendChild(this._run(entry.id, status.run));
    li.appendChild(this._history(status.history, status.history_total, status.recording));
    return li;
  }

  private _devices(devices: DeviceStatus[]): HTMLElement {
    const rows = deviceRows(devices);
    const t = table(
      'torchmagic-devices',
      ['device', 'memory'],
      rows.map(r => [r.name, r.memory])
    );
    rows.forEach((r, i) => (t.tBodies[0].rows[i].dataset.device = r.id));
    return t;
  }

  private _run(kernelId: string, run: RunStatus | null): HTMLElement {
    const box = el('div', 'torchmagic-run');
    if (!run) {
      box.appendChild(el('span', 'torchmagic-run-none', 'No %%train run yet.'));
      return box;
    }
    const view = runView(run);
    box.dataset.status = view.status;
    const info = el('span', 'torchmagic-run-info');
    info.append(
      el('span', 'torchmagic-run-title', view.title),
      el('span', 'torchmagic-run-step', view.step),
      el('span', 'torchmagic-run-loss', view.loss),
      el('span', 'torchmagic-run-eta', view.time),
      document.createTextNode(' · '),
      el('span', 'torchmagic-run-status', view.status)
    );
    box.appendChild(info);
    const stop = el('button', 'jp-mod-styled jp-mod-warn torchmagic-stop', 'Stop');
    stop.title = 'Interrupt this kernel: %%train stops after the current step';
    stop.disabled = !view.stoppable;
    stop.addEventListener('click', () => {
      stop.disabled = true;
      this._stop(kernelId);
    });
    box.appendChild(stop);
    return box;
  }

  private _history(rows: MemoryRow[], total: number, recording: boolean): HTMLElement {
    const view = historyView(rows, total, recording);
    const box = el('div', 'torchmagic-history');
    box.appendChild(el('p', 'torchmagic-history-state', view.state));
    if (view.rows.length === 0) {
      return box;
    }
    box.appendChild(table('torchmagic-history-table', view.header, view.rows));
    if (view.more !== null) {
      box.appendChild(el('p', 'torchmagic-history-more', view.more));
    }
    return box;
  }

  private _bokehEl: HTMLElement;
  private _kernelsEl: HTMLElement;
  private _visibilityChanged = new Signal<this, boolean>(this);
}
