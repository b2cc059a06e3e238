/**
 * Front-end ids. JupyterLab keys settings, the restored layout and keyboard shortcuts by them,
 * and the browser tests find the extension's parts by them: change them only on purpose.
 */

export { COMM_TARGET } from './protocol.generated';

/** The main plugin; its settings schema is schema/plugin.json. */
export const PLUGIN_ID = 'torchmagic-lab:plugin';
/** The plugin that registers the dashboard widget with ipywidgets. */
export const WIDGETS_PLUGIN_ID = 'torchmagic-lab:widgets';

export const ICON_ID = 'torchmagic-lab:icon';
export const PANEL_ID = 'torchmagic-sidebar';
export const STATUS_ITEM_ID = 'torchmagic-lab:status';

export const SHOW_PANEL_COMMAND = 'torchmagic:show-panel';
export const STOP_TRAINING_COMMAND = 'torchmagic:stop-training';
/** The command palette category of both commands. */
export const COMMAND_CATEGORY = 'torchmagic';
