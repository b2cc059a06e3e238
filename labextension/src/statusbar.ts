/**
 * The status-bar item: the current kernel's device memory and running step. Clicking it opens
 * the side panel. It shows only for a kernel that loaded torchmagic.
 */

import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IKernelEntry } from './comm';
import { statusItemView } from './panelmodel';

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
    const view = statusItemView(entry);
    if (view.active !== this._active) {
      this._active = view.active;
      this._activeChanged.emit();
    }
    this.node.textContent = view.text;
    if (!entry?.status) {
      delete this.node.dataset.step;
    } else if (view.run) {
      this.node.dataset.step = view.run.step;
      this.node.dataset.runStatus = view.run.status;
    }
  }

  private _active = false;
  private _activeChanged = new Signal<this, void>(this);
}
