/**
 * Column data of refresh messages: decoding the float32 buffers into columns, and the log of
 * what the kernel did to each bokeh source, so a view rendered later can catch up.
 * Free of the DOM and of BokehJS.
 */

import { ColumnBatch, Progress, RefreshMessage } from './protocol';

export type Columns = { [column: string]: Float32Array };

/** A ColumnBatch with its buffers decoded. */
export interface IDecodedBatch {
  source: string;
  data: Columns;
  rollover: number | null;
}

/** What one refresh changes, decoded. `progress` undefined means unchanged. */
export interface IDecodedRefresh {
  sections: { [section: string]: string };
  progress: Progress | null | undefined;
  streams: IDecodedBatch[];
  replace: IDecodedBatch[];
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Little-endian float32 values of a message buffer. */
export function toFloat32(buffer: ArrayBuffer | ArrayBufferView): Float32Array {
  const view =
    buffer instanceof ArrayBuffer
      ? new DataView(buffer)
      : new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const n = Math.floor(view.byteLength / 4);
  if (LITTLE_ENDIAN) {
    // Copy: the buffer may be shared with the rest of the message and unaligned.
    const bytes = new Uint8Array(view.buffer, view.byteOffset, n * 4).slice();
    return new Float32Array(bytes.buffer);
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = view.getFloat32(i * 4, true);
  }
  return out;
}

function decodeBatch(batch: ColumnBatch, buffers: Float32Array[]): IDecodedBatch {
  const data: Columns = {};
  for (const [name, index] of Object.entries(batch.columns)) {
    data[name] = buffers[index];
  }
  return { source: batch.source, data, rollover: batch.rollover ?? null };
}

/** A validated refresh message (see refreshProblem) with its buffers decoded. */
export function decodeRefresh(
  message: RefreshMessage,
  buffers: (ArrayBuffer | ArrayBufferView)[]
): IDecodedRefresh {
  const floats = buffers.map(toFloat32);
  return {
    sections: message.sections ?? {},
    // null (or absent) leaves the progress as it is, like an absent section.
    progress: message.progress ?? undefined,
    streams: (message.streams ?? []).map(b => decodeBatch(b, floats)),
    replace: (message.replace ?? []).map(b => decodeBatch(b, floats))
  };
}

function concat(a: Float32Array, b: Float32Array, rollover: number | null): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return rollover !== null && out.length > rollover ? out.slice(out.length - rollover) : out;
}

function appendColumns(old: Columns | null, added: Columns, rollover: number | null): Columns {
  const out: Columns = {};
  for (const [name, column] of Object.entries(old ?? {})) {
    out[name] = column;
  }
  for (const [name, column] of Object.entries(added)) {
    out[name] = concat(out[name] ?? new Float32Array(0), column, rollover);
  }
  return out;
}

/** A copy of every column, for a consumer that keeps the arrays it is given. */
export function copyColumns(columns: Columns): Columns {
  const out: Columns = {};
  for (const [name, column] of Object.entries(columns)) {
    out[name] = column.slice();
  }
  return out;
}

/**
 * What the kernel did to one bokeh source since the plot was rendered: either replaced its data
 * (`replaced` then holds the whole current data) or streamed rows into it (`streamed`, already
 * cut to the rollover, to be streamed on top of the rendered data).
 */
interface ISourceLog {
  replaced: Columns | null;
  streamed: Columns | null;
  rollover: number | null;
}

/** The logs of all sources of one plot, since its last baseline from the kernel. */
export class SourceLogs {
  /** A new baseline: what was streamed before is either gone or already in the plot. */
  clear(): void {
    this._logs.clear();
  }

  record(refresh: IDecodedRefresh): void {
    for (const batch of refresh.replace) {
      this._logs.set(batch.source, { replaced: batch.data, streamed: null, rollover: null });
    }
    for (const batch of refresh.streams) {
      const log = this._logs.get(batch.source) ?? {
        replaced: null,
        streamed: null,
        rollover: null
      };
      if (log.replaced !== null) {
        log.replaced = appendColumns(log.replaced, batch.data, batch.rollover);
      } else {
        log.streamed = appendColumns(log.streamed, batch.data, batch.rollover);
        log.rollover = batch.rollover;
      }
      this._logs.set(batch.source, log);
    }
  }

  /** Whether anything was streamed or replaced into `source` since the baseline. */
  has(source: string): boolean {
    return this._logs.has(source);
  }

  /** Everything streamed or replaced since the baseline, as one refresh. */
  replay(): IDecodedRefresh {
    const streams: IDecodedBatch[] = [];
    const replace: IDecodedBatch[] = [];
    for (const [source, log] of this._logs) {
      if (log.replaced !== null) {
        replace.push({ source, data: log.replaced, rollover: null });
      } else if (log.streamed !== null) {
        streams.push({ source, data: log.streamed, rollover: log.rollover });
      }
    }
    return { sections: {}, progress: undefined, streams, replace };
  }

  private _logs = new Map<string, ISourceLog>();
}
