/**
 * Messages between the kernel and the torchmagic front end.
 *
 * This file mirrors `torchmagic/display/protocol.py` name for name; a Python test compares
 * the two, so change them together.
 */

export const MODULE_NAME = 'torchmagic-lab';
export const MODULE_VERSION = '^0.1.0';
export const COMM_TARGET = 'torchmagic';

export const REFRESH = 'torchmagic.refresh';
export const HELLO = 'torchmagic.hello';
export const SUBSCRIBE = 'torchmagic.subscribe';
export const UNSUBSCRIBE = 'torchmagic.unsubscribe';
export const STATUS = 'torchmagic.status';

/** Publishing periods a subscription may ask for, in seconds. */
export const MIN_INTERVAL = 0.25;
export const MAX_INTERVAL = 60.0;
/** At most this many rows of the %memory history travel in one status message. */
export const HISTORY_ROWS = 20;

/**
 * Columns of one bokeh ColumnDataSource; each value is an index into the message buffers.
 *
 * Every buffer holds little-endian float32 values, all columns of one batch the same length.
 */
export interface ColumnBatch {
  /** The bokeh model id of the ColumnDataSource. */
  source: string;
  columns: { [column: string]: number };
  /** Only for streams: keep at most this many rows. */
  rollover: number | null;
}

export interface Progress {
  /** 0..1, or null when the loop's length is unknown. */
  fraction: number | null;
  label: string;
}

export interface RefreshMessage {
  kind: typeof REFRESH;
  /** Section name -> escaped HTML; only the sections that changed. */
  sections: { [section: string]: string };
  progress: Progress | null;
  /** Appended to the source (ColumnDataSource.stream). */
  streams: ColumnBatch[];
  /** Replace the source's data whole (after history compaction). */
  replace: ColumnBatch[];
}

export interface HelloMessage {
  kind: typeof HELLO;
  version: string;
}

/**
 * Front end -> kernel: send status messages. `interval` (seconds) starts a publisher thread
 * with that period; null asks only for events (after each cell, ~1/s during a %%train run).
 */
export interface SubscribeMessage {
  kind: typeof SUBSCRIBE;
  interval: number | null;
}

/** Front end -> kernel: send no status messages. */
export interface UnsubscribeMessage {
  kind: typeof UNSUBSCRIBE;
}

export interface DeviceStatus {
  /** "cpu", "cuda:0", ... */
  id: string;
  name: string;
  /** "host", "torch" (CUDA already initialised) or "nvml". */
  source: string;
  allocated: number | null;
  reserved: number | null;
  peak: number | null;
  used: number | null;
  total: number | null;
}

export interface ProcessMemory {
  rss: number;
  rss_peak: number;
}

export interface RunStatus {
  title: string;
  /** "running", "completed", "interrupted" or "failed". */
  status: string;
  step: number;
  total: number | null;
  loss: number | null;
  eta: number | null;
  elapsed: number;
}

/** One recorded cell of the %memory history (sizes in bytes). */
export interface MemoryRow {
  cell: number | null;
  code: string;
  duration: number;
  rss_delta: number;
  rss_peak: number;
  cuda_delta: number | null;
  cuda_peak: number | null;
  top_module: string | null;
}

export interface StatusMessage {
  kind: typeof STATUS;
  seq: number;
  pid: number;
  interval: number | null;
  devices: DeviceStatus[];
  memory: ProcessMemory;
  run: RunStatus | null;
  recording: boolean;
  history: MemoryRow[];
  history_total: number;
}

/** Section names the dashboard view lays out, in order. */
export const SECTIONS = ['header', 'alerts', 'layers', 'footer'] as const;

export const MESSAGE_KINDS = [REFRESH, HELLO, SUBSCRIBE, UNSUBSCRIBE, STATUS] as const;

// ---------------------------------------------------------------------------------------------
// Validation. Everything that arrives from a kernel is checked before it is used.

function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** The `kind` of a message, or null when it has none. */
export function messageKind(value: unknown): string | null {
  return isObject(value) && typeof value.kind === 'string' ? value.kind : null;
}

function isColumnBatch(value: unknown, nBuffers: number, stream: boolean): value is ColumnBatch {
  if (!isObject(value) || typeof value.source !== 'string' || !isObject(value.columns)) {
    return false;
  }
  for (const index of Object.values(value.columns)) {
    if (!Number.isInteger(index) || (index as number) < 0 || (index as number) >= nBuffers) {
      return false;
    }
  }
  const rollover = value.rollover;
  if (rollover === undefined || rollover === null) {
    return true;
  }
  return stream && Number.isInteger(rollover) && (rollover as number) > 0;
}

function isProgress(value: unknown): value is Progress {
  if (!isObject(value) || typeof value.label !== 'string') {
    return false;
  }
  return value.fraction === null || value.fraction === undefined || isFiniteNumber(value.fraction);
}

/**
 * Checks a refresh message against the protocol. Returns a reason when it is invalid,
 * null when it is valid.
 */
export function refreshProblem(value: unknown, nBuffers: number): string | null {
  if (!isObject(value) || value.kind !== REFRESH) {
    return 'not a refresh message';
  }
  if (value.sections !== undefined) {
    if (!isObject(value.sections)) {
      return 'sections is not an object';
    }
    for (const html of Object.values(value.sections)) {
      if (typeof html !== 'string') {
        return 'a section is not a string';
      }
    }
  }
  if (value.progress !== undefined && value.progress !== null && !isProgress(value.progress)) {
    return 'progress is malformed';
  }
  for (const key of ['streams', 'replace'] as const) {
    const batches = value[key];
    if (batches === undefined) {
      continue;
    }
    if (!Array.isArray(batches)) {
      return `${key} is not a list`;
    }
    for (const batch of batches) {
      if (!isColumnBatch(batch, nBuffers, key === 'streams')) {
        return `a batch in ${key} is malformed`;
      }
    }
  }
  return null;
}

export function isHelloMessage(value: unknown): value is HelloMessage {
  return isObject(value) && value.kind === HELLO && typeof value.version === 'string';
}

// ---------------------------------------------------------------------------------------------
// Status messages: every field is checked, so the panel can render them without guards.

type Check = (value: unknown) => boolean;

const isString: Check = value => typeof value === 'string';
const isInt: Check = value => Number.isInteger(value);
const isNumberOrNull: Check = value => value === null || isFiniteNumber(value);
const isIntOrNull: Check = value => value === null || Number.isInteger(value);
const isStringOrNull: Check = value => value === null || typeof value === 'string';

function fieldsProblem(value: unknown, fields: { [key: string]: Check }, what: string): string | null {
  if (!isObject(value)) {
    return `${what} is not an object`;
  }
  for (const [key, check] of Object.entries(fields)) {
    if (!check(value[key])) {
      return `${what}.${key} is malformed`;
    }
  }
  return null;
}

const DEVICE_FIELDS = {
  id: isString,
  name: isString,
  source: isString,
  allocated: isIntOrNull,
  reserved: isIntOrNull,
  peak: isIntOrNull,
  used: isIntOrNull,
  total: isIntOrNull
};
const MEMORY_FIELDS = { rss: isInt, rss_peak: isInt };
const RUN_FIELDS = {
  title: isString,
  status: isString,
  step: isInt,
  total: isIntOrNull,
  loss: isNumberOrNull,
  eta: isNumberOrNull,
  elapsed: isFiniteNumber
};
const ROW_FIELDS = {
  cell: isIntOrNull,
  code: isString,
  duration: isFiniteNumber,
  rss_delta: isInt,
  rss_peak: isInt,
  cuda_delta: isIntOrNull,
  cuda_peak: isIntOrNull,
  top_module: isStringOrNull
};

/** Why a status message is invalid, or null when it is valid. */
export function statusProblem(value: unknown): string | null {
  if (!isObject(value) || value.kind !== STATUS) {
    return 'not a status message';
  }
  const top = fieldsProblem(
    value,
    {
      seq: isInt,
      pid: isInt,
      interval: isNumberOrNull,
      recording: v => typeof v === 'boolean',
      history_total: isInt
    },
    'status'
  );
  if (top) {
    return top;
  }
  if (!Array.isArray(value.devices) || !Array.isArray(value.history)) {
    return 'devices or history is not a list';
  }
  for (const device of value.devices) {
    const problem = fieldsProblem(device, DEVICE_FIELDS, 'device');
    if (problem) {
      return problem;
    }
  }
  for (const row of value.history) {
    const problem = fieldsProblem(row, ROW_FIELDS, 'history row');
    if (problem) {
      return problem;
    }
  }
  const memory = fieldsProblem(value.memory, MEMORY_FIELDS, 'memory');
  if (memory) {
    return memory;
  }
  return value.run === null ? null : fieldsProblem(value.run, RUN_FIELDS, 'run');
}

export function isStatusMessage(value: unknown): value is StatusMessage {
  return statusProblem(value) === null;
}
