import type { DeviceStatus, MemoryRow, RunStatus, StatusMessage } from '../src/protocol';

export function device(overrides: Partial<DeviceStatus> = {}): DeviceStatus {
  return {
    id: 'cpu',
    name: 'host',
    source: 'host',
    allocated: null,
    reserved: null,
    peak: null,
    used: 1 << 30,
    total: 16 * (1 << 30),
    ...overrides
  };
}

export function run(overrides: Partial<RunStatus> = {}): RunStatus {
  return {
    title: 'net',
    status: 'running',
    step: 7,
    total: 10,
    loss: 0.25,
    eta: 1.5,
    elapsed: 3,
    ...overrides
  };
}

export function row(overrides: Partial<MemoryRow> = {}): MemoryRow {
  return {
    cell: 3,
    code: 'x = 1',
    duration: 0.5,
    rss_delta: 4096,
    rss_peak: 1 << 30,
    cuda_delta: null,
    cuda_peak: null,
    top_module: null,
    ...overrides
  };
}

/** A status message as the kernel builds it (see tests/test_kernel_status.py). */
export function status(overrides: Partial<StatusMessage> = {}): StatusMessage {
  return {
    kind: 'torchmagic.status',
    version: '0.1.0',
    seq: 1,
    pid: 4242,
    interval: null,
    devices: [device()],
    memory: { rss: 1 << 30, rss_peak: 2 * (1 << 30) },
    run: run(),
    recording: true,
    history: [row()],
    history_total: 1,
    ...overrides
  };
}
