/**
 * The dashboard view's layout: the HTML sections from the kernel in protocol order, the
 * progress bar after the first one and the plot after the second.
 */

import { Progress, SECTIONS } from './protocol';

export class DashboardLayout {
  /** Where the plot's view goes. */
  readonly plotEl: HTMLElement;

  /** Builds the layout inside `root`. */
  constructor(root: HTMLElement) {
    root.classList.add('torchmagic-dashboard');
    const make = (cls: string): HTMLElement => {
      const el = document.createElement('div');
      el.className = cls;
      root.appendChild(el);
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
    this.plotEl = make('torchmagic-plot');
    for (const name of SECTIONS.slice(2)) {
      section(name);
    }
  }

  /** Sets the HTML of the named sections; returns the names no section has. */
  applySections(sections: { [name: string]: string }): string[] {
    const unknown: string[] = [];
    for (const [name, html] of Object.entries(sections)) {
      const el = this._sectionEls.get(name);
      if (el === undefined) {
        unknown.push(name);
        continue;
      }
      el.innerHTML = html;
    }
    return unknown;
  }

  /** Shows the progress; null hides the bar. */
  applyProgress(progress: Progress | null): void {
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

  private _sectionEls = new Map<string, HTMLElement>();
  private _progressEl: HTMLElement;
  private _barEl: HTMLElement;
  private _labelEl: HTMLElement;
}
