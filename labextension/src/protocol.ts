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

/** Section names the dashboard view lays out, in order. */
export const SECTIONS = ['header', 'alerts', 'layers', 'footer'] as const;

export const MESSAGE_KINDS = [REFRESH, HELLO] as const;

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
