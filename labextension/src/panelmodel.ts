/**
 * What the side panel and the status-bar item show for a kernel, as plain data: the texts and
 * table cells derived from its latest status message. panel.ts and statusbar.ts put them in the
 * DOM; keeping the derivation here lets it be tested without a browser.
 */

import type { IKernelEntry } from './comm';
import { duration, nbytes, number, signedBytes } from './format';
import type { DeviceStatus, MemoryRow, RunStatus, StatusMessage } from './protocol';

/** The process line under a kernel's name. */
export function memoryLine(status: StatusMessage): string {
  const { rss, rss_peak } = status.memory;
  return `Process RSS ${nbytes(rss)} · peak ${nbytes(rss_peak)} · pid ${status.pid}`;
}

export interface IDeviceRow {
  id: string;
  name: string;
  memory: string;
}

/** One row per device: its name and what is known of its memory. */
export function deviceRows(devices: DeviceStatus[]): IDeviceRow[] {
  return devices.map(d => {
    const parts: string[] = [];
    if (d.allocated !== null) {
      parts.push(`allocated ${nbytes(d.allocated)}`);
    }
    if (d.reserved !== null) {
      parts.push(`reserved ${nbytes(d.reserved)}`);
    }
    if (d.peak !== null) {
      parts.push(`peak ${nbytes(d.peak)}`);
    }
    if (d.used !== null) {
      const what = d.id === 'cpu' ? 'RSS' : 'used';
      parts.push(`${what} ${nbytes(d.used)}${d.total ? ` of ${nbytes(d.total)}` : ''}`);
    } else if (d.total) {
      parts.push(`of ${nbytes(d.total)}`);
    }
    const name =
      d.id === 'cpu' ? 'cpu' : `${d.id} ${d.name}${d.source === 'nvml' ? ' (NVML)' : ''}`;
    return { id: d.id, name, memory: parts.join(' · ') };
  });
}

export interface IRunView {
  status: string;
  title: string;
  step: string;
  loss: string;
  /** ETA while running, the elapsed time after. */
  time: string;
  /** Whether Stop can act. */
  stoppable: boolean;
}

export function runView(run: RunStatus): IRunView {
  const running = run.status === 'running';
  return {
    status: run.status,
    title: run.title ? `${run.title}: ` : '',
    step: `step ${run.step}${run.total ? ` / ${run.total}` : ''}`,
    loss: ` · loss ${number(run.loss)}`,
    time: running ? ` · ETA ${duration(run.eta)}` : ` · ${duration(run.elapsed)}`,
    stoppable: running
  };
}

export interface IHistoryView {
  state: string;
  /** Empty when no row was recorded. */
  header: string[];
  /** Newest first. */
  rows: string[][];
  /** A note on the rows that did not travel, or null. */
  more: string | null;
}

/** The `%memory` table: CUDA and module columns only when some row has them. */
export function historyView(rows: MemoryRow[], total: number, recording: boolean): IHistoryView {
  const state = recording ? 'recording (%memory off stops)' : 'not recording (%memory on starts)';
  const view: IHistoryView = {
    state: `Memory per cell: ${state}`,
    header: [],
    rows: [],
    more: null
  };
  if (rows.length === 0) {
    return view;
  }
  const cuda = rows.some(r => r.cuda_delta !== null);
  const modules = rows.some(r => r.top_module !== null);
  view.header = [
    'cell',
    'RSS Δ',
    'RSS peak',
    ...(cuda ? ['CUDA Δ', 'CUDA peak'] : []),
    ...(modules ? ['top module'] : [])
  ];
  view.rows = [...rows]
    .reverse()
    .map(r => [
      `${r.cell === null ? '' : `[${r.cell}] `}${r.code}`,
      signedBytes(r.rss_delta),
      nbytes(r.rss_peak),
      ...(cuda ? [signedBytes(r.cuda_delta), nbytes(r.cuda_peak)] : []),
      ...(modules ? [r.top_module ?? ''] : [])
    ]);
  if (total > rows.length) {
    view.more = `${total - rows.length} older rows: torchmagic.memory_history()`;
  }
  return view;
}

export interface IStatusItemView {
  /** Whether the item shows (the current kernel loaded torchmagic). */
  active: boolean;
  text: string;
  /** The run's step and status, when there was a run. */
  run: { step: string; status: string } | null;
}

/** The status-bar item for the current kernel's entry (undefined: no torchmagic there). */
export function statusItemView(entry: Pick<IKernelEntry, 'status'> | undefined): IStatusItemView {
  const status = entry?.status;
  if (!status) {
    return { active: entry !== undefined, text: entry ? 'torchmagic' : '', run: null };
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
  return {
    active: true,
    text: `torchmagic · ${memory}${step}`,
    run: run ? { step: String(run.step), status: run.status } : null
  };
}
