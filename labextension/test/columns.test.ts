import { describe, expect, it } from 'vitest';

import { copyColumns, decodeRefresh, SourceLogs, toFloat32 } from '../src/columns';
import type { RefreshMessage } from '../src/protocol';

function buffer(values: number[]): ArrayBuffer {
  const view = new DataView(new ArrayBuffer(values.length * 4));
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return view.buffer;
}

function refresh(overrides: Partial<RefreshMessage>): RefreshMessage {
  return {
    kind: 'torchmagic.refresh',
    sections: {},
    progress: null,
    streams: [],
    replace: [],
    ...overrides
  };
}

describe('toFloat32', () => {
  it('reads little-endian float32, also from an unaligned view', () => {
    expect([...toFloat32(buffer([1, 2.5]))]).toEqual([1, 2.5]);
    const bytes = new Uint8Array(9);
    bytes.set(new Uint8Array(buffer([3, -4])), 1);
    expect([...toFloat32(new Uint8Array(bytes.buffer, 1, 8))]).toEqual([3, -4]);
  });
});

describe('decodeRefresh', () => {
  it('maps column indices to buffers; null progress means unchanged', () => {
    const decoded = decodeRefresh(
      refresh({
        sections: { header: 'h' },
        streams: [{ source: 's', columns: { x: 1, y: 0 }, rollover: 3 }]
      }),
      [buffer([10]), buffer([20])]
    );
    expect(decoded.sections).toEqual({ header: 'h' });
    expect(decoded.progress).toBeUndefined();
    expect(decoded.streams).toHaveLength(1);
    expect([...decoded.streams[0].data.x]).toEqual([20]);
    expect([...decoded.streams[0].data.y]).toEqual([10]);
    expect(decoded.streams[0].rollover).toBe(3);
  });
});

describe('SourceLogs', () => {
  const batch = (source: string, x: number[], rollover: number | null = null) => ({
    source,
    data: { x: new Float32Array(x) },
    rollover
  });
  const empty = { sections: {}, progress: undefined, streams: [], replace: [] };

  it('replays streamed rows, cut to the rollover', () => {
    const logs = new SourceLogs();
    logs.record({ ...empty, streams: [batch('s', [1, 2], 3)] });
    logs.record({ ...empty, streams: [batch('s', [3, 4], 3)] });
    const replay = logs.replay();
    expect(replay.replace).toEqual([]);
    expect(replay.streams.map(b => [b.source, [...b.data.x], b.rollover])).toEqual([
      ['s', [2, 3, 4], 3]
    ]);
  });

  it('folds streams after a replace into the replaced data', () => {
    const logs = new SourceLogs();
    logs.record({ ...empty, streams: [batch('s', [1])] });
    logs.record({ ...empty, replace: [batch('s', [5, 6])] });
    logs.record({ ...empty, streams: [batch('s', [7])] });
    const replay = logs.replay();
    expect(replay.streams).toEqual([]);
    expect(replay.replace.map(b => [...b.data.x])).toEqual([[5, 6, 7]]);
  });

  it('forgets everything at a new baseline', () => {
    const logs = new SourceLogs();
    logs.record({ ...empty, streams: [batch('s', [1])] });
    logs.clear();
    expect(logs.replay()).toEqual(empty);
  });
});

describe('copyColumns', () => {
  it('copies the arrays', () => {
    const columns = { x: new Float32Array([1]) };
    const copy = copyColumns(columns);
    copy.x[0] = 2;
    expect(columns.x[0]).toBe(1);
  });
});
