/**
 * Messages between the kernel and the torchmagic front end, and their validation.
 *
 * The shapes and constants are generated from `torchmagic/display/protocol.py` into
 * `protocol.generated.ts` (re-exported here); this file holds what needs more than the shapes:
 * the checks applied to everything that arrives from a kernel before it is used.
 */

import {
  ColumnBatch,
  FieldSpec,
  HELLO,
  HelloMessage,
  Progress,
  REFRESH,
  RefreshMessage,
  SHAPES,
  ShapeName,
  STATUS,
  StatusMessage
} from './protocol.generated';

export * from './protocol.generated';

type JSONRecord = { [key: string]: unknown };

function isObject(value: unknown): value is JSONRecord {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** `value[key]` for a field of message type `T`: the compiler checks the name. */
function field<T>(value: JSONRecord, key: keyof T & string): unknown {
  return value[key];
}

/** The `kind` of a message, or null when it has none. */
export function messageKind(value: unknown): string | null {
  return isObject(value) && typeof value.kind === 'string' ? value.kind : null;
}

// ---------------------------------------------------------------------------------------------
// Checks driven by the generated field specs: every declared field, nothing absent.

const SCALARS: { [kind in FieldSpec & string]: (value: unknown) => boolean } = {
  string: value => typeof value === 'string',
  int: value => Number.isInteger(value),
  number: isFiniteNumber,
  boolean: value => typeof value === 'boolean'
};

/** What problems call a shape (the kernel-side names of the status parts). */
const LABELS: { readonly [N in ShapeName]?: string } = {
  StatusMessage: 'status',
  DeviceStatus: 'device',
  ProcessMemory: 'memory',
  RunStatus: 'run',
  MemoryRow: 'history row'
};

function valueProblem(value: unknown, spec: FieldSpec, what: string): string | null {
  if (typeof spec === 'string') {
    return SCALARS[spec](value) ? null : `${what} is malformed`;
  }
  if ('literal' in spec) {
    return value === spec.literal ? null : `${what} is malformed`;
  }
  if ('nullable' in spec) {
    return value === null ? null : valueProblem(value, spec.nullable, what);
  }
  if ('shape' in spec) {
    return shapeProblem(value, spec.shape);
  }
  if ('list' in spec) {
    if (!Array.isArray(value)) {
      return `${what} is not a list`;
    }
    for (const item of value) {
      const problem = valueProblem(item, spec.list, `${what} item`);
      if (problem) {
        return problem;
      }
    }
    return null;
  }
  if (!isObject(value)) {
    return `${what} is not an object`;
  }
  for (const [key, item] of Object.entries(value)) {
    const problem = valueProblem(item, spec.dict, `${what}.${key}`);
    if (problem) {
      return problem;
    }
  }
  return null;
}

/** Why `value` is not a `name` with every field declared in protocol.py, or null. */
export function shapeProblem(value: unknown, name: ShapeName): string | null {
  const what = LABELS[name] ?? name;
  if (!isObject(value)) {
    return `${what} is not an object`;
  }
  const fields: { [key: string]: FieldSpec } = SHAPES[name];
  for (const [key, spec] of Object.entries(fields)) {
    const problem = valueProblem(value[key], spec, `${what}.${key}`);
    if (problem) {
      return problem;
    }
  }
  return null;
}

export function isHelloMessage(value: unknown): value is HelloMessage {
  return messageKind(value) === HELLO && shapeProblem(value, 'HelloMessage') === null;
}

/** Why a status message is invalid, or null when it is valid. */
export function statusProblem(value: unknown): string | null {
  if (messageKind(value) !== STATUS) {
    return 'not a status message';
  }
  return shapeProblem(value, 'StatusMessage');
}

export function isStatusMessage(value: unknown): value is StatusMessage {
  return statusProblem(value) === null;
}

// ---------------------------------------------------------------------------------------------
// Refresh messages: beyond the shape, buffer indices must exist and only streams roll over.
// Absent fields are tolerated: absent and empty mean the same here.

function isColumnBatch(value: unknown, nBuffers: number, stream: boolean): boolean {
  if (!isObject(value)) {
    return false;
  }
  const columns = field<ColumnBatch>(value, 'columns');
  if (typeof field<ColumnBatch>(value, 'source') !== 'string' || !isObject(columns)) {
    return false;
  }
  for (const index of Object.values(columns)) {
    if (!Number.isInteger(index) || (index as number) < 0 || (index as number) >= nBuffers) {
      return false;
    }
  }
  const rollover = field<ColumnBatch>(value, 'rollover');
  if (rollover === undefined || rollover === null) {
    return true;
  }
  return stream && Number.isInteger(rollover) && (rollover as number) > 0;
}

function isProgress(value: unknown): boolean {
  if (!isObject(value) || typeof field<Progress>(value, 'label') !== 'string') {
    return false;
  }
  const fraction = field<Progress>(value, 'fraction');
  return fraction === null || fraction === undefined || isFiniteNumber(fraction);
}

/**
 * Checks a refresh message against the protocol. Returns a reason when it is invalid,
 * null when it is valid.
 */
export function refreshProblem(value: unknown, nBuffers: number): string | null {
  if (!isObject(value) || value.kind !== REFRESH) {
    return 'not a refresh message';
  }
  const sections = field<RefreshMessage>(value, 'sections');
  if (sections !== undefined) {
    if (!isObject(sections)) {
      return 'sections is not an object';
    }
    for (const html of Object.values(sections)) {
      if (typeof html !== 'string') {
        return 'a section is not a string';
      }
    }
  }
  const progress = field<RefreshMessage>(value, 'progress');
  if (progress !== undefined && progress !== null && !isProgress(progress)) {
    return 'progress is malformed';
  }
  for (const key of ['streams', 'replace'] as const) {
    const batches = field<RefreshMessage>(value, key);
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
