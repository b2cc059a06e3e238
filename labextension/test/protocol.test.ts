import { describe, expect, it } from 'vitest';

import {
  FieldSpec,
  isHelloMessage,
  isStatusMessage,
  messageKind,
  refreshProblem,
  SHAPES,
  ShapeName,
  shapeProblem,
  statusProblem
} from '../src/protocol';
import { status } from './fixtures';

/** A JSON copy of `value` with the field at `path` set to `replacement`. */
function withField(value: unknown, path: (string | number)[], replacement: unknown): unknown {
  const copy = JSON.parse(JSON.stringify(value));
  let node = copy;
  for (const key of path.slice(0, -1)) {
    node = node[key];
  }
  node[path[path.length - 1]] = replacement;
  return copy;
}

describe('messageKind', () => {
  it('reads the kind of an object', () => {
    expect(messageKind({ kind: 'torchmagic.hello' })).toBe('torchmagic.hello');
  });

  it.each([null, 'x', 3, [], { kind: 3 }, {}])('is null for %j', value => {
    expect(messageKind(value)).toBeNull();
  });
});

describe('isHelloMessage', () => {
  it('wants the hello kind and a version', () => {
    expect(isHelloMessage({ kind: 'torchmagic.hello', version: '0.1.0' })).toBe(true);
    expect(isHelloMessage({ kind: 'torchmagic.hello' })).toBe(false);
    expect(isHelloMessage({ kind: 'torchmagic.hello', version: 1 })).toBe(false);
    expect(isHelloMessage({ kind: 'torchmagic.status', version: '0.1.0' })).toBe(false);
  });
});

describe('statusProblem', () => {
  it('accepts a full status message', () => {
    expect(statusProblem(status())).toBeNull();
    expect(isStatusMessage(status())).toBe(true);
  });

  it('accepts the nullable parts as null', () => {
    const message = status({ run: null, interval: null, devices: [], history: [] });
    expect(statusProblem(message)).toBeNull();
  });

  it('ignores fields it does not know', () => {
    expect(statusProblem({ ...status(), extra: 1 })).toBeNull();
  });

  it('rejects other kinds', () => {
    expect(statusProblem({ ...status(), kind: 'torchmagic.hello' })).toBe('not a status message');
    expect(statusProblem(null)).toBe('not a status message');
  });

  it.each([
    [['devices', 0, 'used'], 'lots', 'device.used is malformed'],
    [['seq'], 1.5, 'status.seq is malformed'],
    [['memory'], 3, 'memory is not an object'],
    [['memory', 'rss_peak'], null, 'memory.rss_peak is malformed'],
    [['history'], {}, 'status.history is not a list'],
    [['history', 0, 'cell'], '3', 'history row.cell is malformed'],
    [['run', 'loss'], 'nan', 'run.loss is malformed'],
    [['run', 'elapsed'], null, 'run.elapsed is malformed'],
    [['recording'], 1, 'status.recording is malformed']
  ])('at %j, %j: %s', (path, replacement, problem) => {
    expect(statusProblem(withField(status(), path, replacement))).toBe(problem);
  });

  it('rejects non-finite numbers', () => {
    expect(statusProblem({ ...status(), interval: Infinity })).toBe('status.interval is malformed');
  });
});

/** A value of the wrong type for every spec: what shapeProblem must reject. */
function wrongValue(spec: FieldSpec): unknown {
  if (spec === 'string') {
    return 1;
  }
  if (typeof spec === 'string') {
    return 'x';
  }
  if ('nullable' in spec) {
    return wrongValue(spec.nullable);
  }
  return 1;
}

describe('every field of every generated shape is checked', () => {
  const valid = status();
  const nested: { [name in ShapeName]?: object } = {
    StatusMessage: valid,
    DeviceStatus: valid.devices[0],
    ProcessMemory: valid.memory,
    RunStatus: valid.run!,
    MemoryRow: valid.history[0]
  };
  for (const [name, value] of Object.entries(nested) as [ShapeName, object][]) {
    const fields: { [key: string]: FieldSpec } = SHAPES[name];
    for (const [key, spec] of Object.entries(fields)) {
      it(`${name}.${key}`, () => {
        expect(shapeProblem(value, name)).toBeNull();
        const missing: { [key: string]: unknown } = { ...value };
        delete missing[key];
        expect(shapeProblem(missing, name)).not.toBeNull();
        expect(shapeProblem({ ...value, [key]: wrongValue(spec) }, name)).not.toBeNull();
      });
    }
  }
});

describe('refreshProblem', () => {
  const refresh = {
    kind: 'torchmagic.refresh',
    sections: { header: '<b>x</b>' },
    progress: { fraction: 0.5, label: 'half' },
    streams: [{ source: 's1', columns: { x: 0, y: 1 }, rollover: 100 }],
    replace: [{ source: 's2', columns: { x: 1 }, rollover: null }]
  };

  it('accepts a full refresh', () => {
    expect(refreshProblem(refresh, 2)).toBeNull();
  });

  it('tolerates absent parts', () => {
    expect(refreshProblem({ kind: 'torchmagic.refresh' }, 0)).toBeNull();
    expect(refreshProblem({ ...refresh, progress: { label: 'x' } }, 2)).toBeNull();
    expect(refreshProblem({ ...refresh, progress: null }, 2)).toBeNull();
  });

  it('wants every buffer index to exist', () => {
    expect(refreshProblem(refresh, 1)).toBe('a batch in streams is malformed');
  });

  it('lets only streams roll over', () => {
    const replace = [{ source: 's2', columns: { x: 1 }, rollover: 5 }];
    expect(refreshProblem({ ...refresh, replace }, 2)).toBe('a batch in replace is malformed');
    const streams = [{ source: 's1', columns: { x: 0 }, rollover: 0 }];
    expect(refreshProblem({ ...refresh, streams }, 2)).toBe('a batch in streams is malformed');
  });

  it('names what is malformed', () => {
    expect(refreshProblem({ kind: 'torchmagic.status' }, 0)).toBe('not a refresh message');
    expect(refreshProblem({ ...refresh, sections: [] }, 2)).toBe('sections is not an object');
    expect(refreshProblem({ ...refresh, sections: { a: 1 } }, 2)).toBe('a section is not a string');
    expect(refreshProblem({ ...refresh, progress: { fraction: 1 } }, 2)).toBe(
      'progress is malformed'
    );
    expect(refreshProblem({ ...refresh, streams: {} }, 2)).toBe('streams is not a list');
  });
});
