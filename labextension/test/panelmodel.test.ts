import { describe, expect, it } from 'vitest';

import { deviceRows, historyView, memoryLine, runView, statusItemView } from '../src/panelmodel';
import { device, row, run, status } from './fixtures';

const GiB = 1024 ** 3;

describe('memoryLine', () => {
  it('shows RSS, its peak and the pid', () => {
    expect(memoryLine(status())).toBe('Process RSS 1.0 GiB · peak 2.0 GiB · pid 4242');
  });
});

describe('deviceRows', () => {
  it('shows the host RSS of the total', () => {
    expect(deviceRows([device()])).toEqual([
      { id: 'cpu', name: 'cpu', memory: 'RSS 1.0 GiB of 16.0 GiB' }
    ]);
  });

  it('shows what torch knows of a CUDA device', () => {
    const cuda = device({
      id: 'cuda:0',
      name: 'H100',
      source: 'torch',
      allocated: GiB,
      reserved: 2 * GiB,
      peak: 3 * GiB,
      used: null,
      total: 80 * GiB
    });
    expect(deviceRows([cuda])).toEqual([
      {
        id: 'cuda:0',
        name: 'cuda:0 H100',
        memory: 'allocated 1.0 GiB · reserved 2.0 GiB · peak 3.0 GiB · of 80.0 GiB'
      }
    ]);
  });

  it('marks NVML readings', () => {
    const nvml = device({ id: 'cuda:1', name: 'A10', source: 'nvml', used: GiB, total: null });
    expect(deviceRows([nvml])[0]).toEqual({
      id: 'cuda:1',
      name: 'cuda:1 A10 (NVML)',
      memory: 'used 1.0 GiB'
    });
  });
});

describe('runView', () => {
  it('shows the ETA while running, and allows Stop', () => {
    expect(runView(run())).toEqual({
      status: 'running',
      title: 'net: ',
      step: 'step 7 / 10',
      loss: ' · loss 0.25',
      time: ' · ETA 1.5s',
      stoppable: true
    });
  });

  it('shows the elapsed time after the run', () => {
    const view = runView(run({ status: 'completed', title: '', total: null, loss: null }));
    expect(view).toMatchObject({ title: '', step: 'step 7', loss: ' · loss –', time: ' · 3.0s' });
    expect(view.stoppable).toBe(false);
  });
});

describe('historyView', () => {
  it('says whether %memory records', () => {
    expect(historyView([], 0, false)).toEqual({
      state: 'Memory per cell: not recording (%memory on starts)',
      header: [],
      rows: [],
      more: null
    });
    expect(historyView([], 0, true).state).toBe('Memory per cell: recording (%memory off stops)');
  });

  it('lists the newest row first, with CUDA and module columns only when known', () => {
    const rows = [row({ cell: 1, code: 'a' }), row({ cell: null, code: 'b', rss_delta: -4096 })];
    const view = historyView(rows, 2, true);
    expect(view.header).toEqual(['cell', 'RSS Δ', 'RSS peak']);
    expect(view.rows).toEqual([
      ['b', '-4.0 KiB', '1.0 GiB'],
      ['[1] a', '+4.0 KiB', '1.0 GiB']
    ]);
    expect(view.more).toBeNull();

    const cuda = historyView([row({ cuda_delta: 0, cuda_peak: GiB, top_module: 'fc' })], 5, true);
    expect(cuda.header).toEqual(['cell', 'RSS Δ', 'RSS peak', 'CUDA Δ', 'CUDA peak', 'top module']);
    expect(cuda.rows[0].slice(3)).toEqual(['0 B', '1.0 GiB', 'fc']);
    expect(cuda.more).toBe('4 older rows: torchmagic.memory_history()');
  });
});

describe('statusItemView', () => {
  it('is hidden without a torchmagic kernel, and waits for its first status', () => {
    expect(statusItemView(undefined)).toEqual({ active: false, text: '', run: null });
    expect(statusItemView({ status: null })).toEqual({
      active: true,
      text: 'torchmagic',
      run: null
    });
  });

  it('prefers CUDA allocated memory, then NVML, then RSS', () => {
    const cpu = status({ run: null });
    expect(statusItemView({ status: cpu }).text).toBe('torchmagic · RSS 1.0 GiB');
    const nvml = status({
      run: null,
      devices: [device(), device({ id: 'cuda:0', source: 'nvml', used: 2 * GiB })]
    });
    expect(statusItemView({ status: nvml }).text).toBe('torchmagic · cuda:0 2.0 GiB');
    const torch = status({
      run: null,
      devices: [device({ id: 'cuda:0', allocated: 3 * GiB }), device({ id: 'cuda:1', used: GiB })]
    });
    expect(statusItemView({ status: torch }).text).toBe('torchmagic · cuda:0 3.0 GiB');
  });

  it('shows the step of a running run', () => {
    expect(statusItemView({ status: status() })).toEqual({
      active: true,
      text: 'torchmagic · RSS 1.0 GiB · step 7',
      run: { step: '7', status: 'running' }
    });
    const done = statusItemView({ status: status({ run: run({ status: 'failed' }) }) });
    expect(done.text).toBe('torchmagic · RSS 1.0 GiB');
    expect(done.run).toEqual({ step: '7', status: 'failed' });
  });
});
