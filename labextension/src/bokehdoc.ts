/**
 * Refreshes applied to the plot: the dashboard's child view is a jupyter_bokeh view, and its
 * BokehJS document holds the ColumnDataSources the kernel's column batches name.
 *
 * jupyter_bokeh and BokehJS have no types here; the interfaces below are the parts used.
 */

import { Columns, copyColumns, IDecodedRefresh } from './columns';

interface IMutableView {
  _change_event?: unknown;
  _document?: unknown;
  __torchmagicMuted?: boolean;
}

interface IBokehDocument {
  get_model_by_id(id: string): unknown;
}

interface IColumnDataSource {
  stream(data: Columns, rollover: number | undefined, options: { sync: boolean }): void;
  setv(attrs: { data: Columns }, options: { sync: boolean }): void;
}

export type WarnOnce = (key: string, text: string) => void;

/**
 * jupyter_bokeh's view sends every change of its BokehJS document to the kernel, whatever the
 * event's `sync` flag: our own streams, and also what BokehJS derives from them (a DataRange1d
 * recomputes `start`/`end` after each stream, which is one message per axis per refresh). The
 * kernel is busy running the training cell and would only read them afterwards, all at once.
 *
 * The dashboard's plots are output only (a Stop control works by interrupting the kernel, see
 * DESIGN.md section 3), so their view sends nothing back. Changes from the kernel still arrive.
 * Returns false when the view is not the jupyter_bokeh view we know.
 */
export function muteBokehView(view: object): boolean {
  const v = view as IMutableView;
  if (v.__torchmagicMuted) {
    return true;
  }
  if (typeof v._change_event !== 'function') {
    return false;
  }
  v._change_event = function (): void {
    // Deliberately nothing: see above.
  };
  v.__torchmagicMuted = true;
  return true;
}

/** The BokehJS document of a jupyter_bokeh view, if it has rendered. */
function bokehDocument(view: object): IBokehDocument | null {
  const doc = (view as IMutableView)._document as Partial<IBokehDocument> | undefined;
  return doc && typeof doc.get_model_by_id === 'function' ? (doc as IBokehDocument) : null;
}

function columnSource(doc: IBokehDocument, id: string, warn: WarnOnce): IColumnDataSource | null {
  const model = doc.get_model_by_id(id) as Partial<IColumnDataSource> | null | undefined;
  if (model === null || model === undefined || typeof model.stream !== 'function') {
    warn(`source:${id}`, `torchmagic: no ColumnDataSource with id ${id} in the plot`);
    return null;
  }
  return model as IColumnDataSource;
}

/** Whether the view's BokehJS document has a model with this id (a source a patch adds may not yet). */
export function hasModel(view: object, id: string): boolean {
  const model = bokehDocument(view)?.get_model_by_id(id);
  return model !== null && model !== undefined;
}

/** Applies the refresh's column batches to the sources in the view's BokehJS document. */
export function applyToBokeh(view: object, refresh: IDecodedRefresh, warn: WarnOnce): void {
  if (refresh.streams.length === 0 && refresh.replace.length === 0) {
    return;
  }
  const doc = bokehDocument(view);
  if (doc === null) {
    warn('doc', 'torchmagic: the plot view has no BokehJS document; update skipped');
    return;
  }
  try {
    for (const batch of refresh.replace) {
      const source = columnSource(doc, batch.source, warn);
      // The source keeps the arrays it is given: give it its own copy.
      source?.setv({ data: copyColumns(batch.data) }, { sync: false });
    }
    for (const batch of refresh.streams) {
      const source = columnSource(doc, batch.source, warn);
      source?.stream(batch.data, batch.rollover ?? undefined, { sync: false });
    }
  } catch (reason) {
    console.error('torchmagic: could not apply a refresh to the plot', reason);
  }
}
