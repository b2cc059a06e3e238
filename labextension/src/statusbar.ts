/**
 * The status-bar item: the current kernel's device memory and running step. Clicking it opens
 * the side panel. It shows only for a kernel that loaded torchmagic.
 */

import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IKernelEntry } from './comm';
import { nbytes } from './format';

export const STATUS_ITEM_ID = 'torchmagic-lab:status';

export class TorchMagicStatusItem extends Widget {
  constructor(private readonly _open: () => void) {
    super();
    this.addClass('torchmagic-status');
    this.addClass('jp-StatusBar-TextItem');
    this.node.title = 'torchmagic: open the side panel';
    this.node.addEventListener('click', () => this._open());
    this.update_(undefined);
  }

  /** Emitted when the item starts or stops having a kernel to show (for `isActive`). */
  get activeChanged(): ISignal<this, void> {
    return this._activeChanged;
  }

  get active(): boolean {
    return this._active;
  }

  /** Shows the current kernel's entry (undefined: the current kernel has no torchmagic). */
  update_(entry: IKernelEntry | undefined): void {
    const active = entry !== undefined;
    if (active !== this._active) {
      this._active = active;
      this._activeChanged.emit();
    }
    const status = entry?.status;
    if (!status) {
      this.node.textContent = entry ? 'torchmagic' : '';
      delete this.node.dataset.step;
      return;
    }
    const cuda = status.devices.find(d => d.id.startsWith('cuda') && d.allocated !== null);
    const nvml = status.devices.find(d => d.id.startsWith('cuda') && d.used !== null);
    const memory = cuda
      ? `${cuda.id} ${nbytes(cuda.allocated)}`
      : nvml
        ? `${nvml.id} ${nbytes(nvml.used)}`
        : `RSS ${nbytes(status.memory.rss)}`;
    const run = status.run;
    const step = run && run.status === 'running' ? ` · step ${run.step}` : '';
    this.node.textContent = `torchmagic · ${memory}${step}`;
    if (run) {
      this.node.dataset.step = String(run.step);
      this.node.dataset.runStatus = run.status;
    }
  }

  private _active = false;
  private _activeChanged = new Signal<this, void>(this);
}
