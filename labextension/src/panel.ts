/** The torchmagic side panel: what the page knows about torchmagic (placeholder for more). */

import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { IBokehStatus } from './bokeh';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">
<path class="jp-icon3" fill="#616161" d="M8 1.2 9.9 3.1 8.6 4.4A4.9 4.9 0 1 1 4.4 6.1L6 4.5a2.6 2.6 0 1 0 1.3-.6L6.1 2.7z"/>
<circle class="jp-icon3" fill="#616161" cx="11.2" cy="3.9" r="1"/>
</svg>`;

export const torchmagicIcon = new LabIcon({ name: 'torchmagic-lab:icon', svgstr: ICON_SVG });

export const PANEL_ID = 'torchmagic-sidebar';

export class TorchMagicPanel extends Widget {
  constructor(version: string) {
    super();
    this.id = PANEL_ID;
    this.addClass('torchmagic-panel');
    this.title.icon = torchmagicIcon;
    this.title.caption = 'torchmagic';

    const heading = document.createElement('h2');
    heading.textContent = 'torchmagic';
    const about = document.createElement('p');
    about.className = 'torchmagic-panel-about';
    about.textContent = `Front end ${version}. Run %load_ext torchmagic in a notebook, then %%train.`;
    this._bokehEl = document.createElement('p');
    this._bokehEl.className = 'torchmagic-panel-bokeh';
    this._bokehEl.textContent = 'BokehJS: loading…';
    const kernelsHeading = document.createElement('h3');
    kernelsHeading.textContent = 'Kernels';
    this._kernelsEl = document.createElement('ul');
    this._kernelsEl.className = 'torchmagic-panel-kernels';
    this.node.append(heading, about, this._bokehEl, kernelsHeading, this._kernelsEl);
    this.setKernels(new Map());
  }

  setBokeh(status: IBokehStatus): void {
    const where = { page: 'already on the page', server: 'served by Jupyter', failed: 'failed' };
    const version = status.version ? ` ${status.version}` : '';
    this._bokehEl.textContent = `BokehJS${version}: ${where[status.origin]}`;
    if (status.error) {
      this._bokehEl.title = status.error;
    }
  }

  setKernels(kernels: Map<string, string>): void {
    this._kernelsEl.textContent = '';
    if (kernels.size === 0) {
      const li = document.createElement('li');
      li.textContent = 'No kernel has loaded torchmagic yet.';
      this._kernelsEl.appendChild(li);
      return;
    }
    for (const [id, version] of kernels) {
      const li = document.createElement('li');
      li.textContent = `${id.slice(0, 8)}: torchmagic ${version}`;
      this._kernelsEl.appendChild(li);
    }
  }

  private _bokehEl: HTMLElement;
  private _kernelsEl: HTMLElement;
}
