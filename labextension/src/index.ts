import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';

import { ensureBokeh } from './bokeh';
import { CommRegistry } from './comm';
import { PANEL_ID, TorchMagicPanel, torchmagicIcon } from './panel';
import { MODULE_NAME } from './protocol';
import { VERSION } from './version';


export const SHOW_PANEL_COMMAND = 'torchmagic:show-panel';

/** BokehJS, the comm target, the side panel and its command. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'torchmagic-lab:plugin',
  description: 'torchmagic: side panel, kernel comm and offline BokehJS.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, IConsoleTracker],
  activate: async (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    consoles: IConsoleTracker | null
  ): Promise<void> => {
    // Start loading BokehJS first: widget views of plots need it on the page.
    const bokeh = ensureBokeh();

    const panel = new TorchMagicPanel(VERSION);
    app.shell.add(panel, 'left', { rank: 900 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(SHOW_PANEL_COMMAND, {
      label: 'torchmagic: Show Panel',
      caption: 'Show the torchmagic side panel',
      icon: torchmagicIcon,
      execute: () => {
        app.shell.activateById(panel.id);
      }
    });
    palette?.addItem({ command: SHOW_PANEL_COMMAND, category: 'torchmagic' });

    const comms = new CommRegistry(VERSION);
    comms.helloReceived.connect(() => panel.setKernels(comms.kernels));
    for (const tracker of [notebooks, consoles]) {
      if (tracker) {
        tracker.forEach(widget => comms.watch(widget.sessionContext));
        tracker.widgetAdded.connect((_, widget) => comms.watch(widget.sessionContext));
      }
    }

    // Plain jupyter_bokeh widgets need BokehJS as soon as they render: hold activation until
    // it is there (it comes from this server, so this is quick; it never rejects).
    panel.setBokeh(await bokeh);
  }
};

/** The dashboard widget model and view. */
const widgets: JupyterFrontEndPlugin<void> = {
  id: 'torchmagic-lab:widgets',
  description: 'torchmagic: the dashboard widget.',
  autoStart: true,
  requires: [IJupyterWidgetRegistry],
  activate: (app: JupyterFrontEnd, registry: IJupyterWidgetRegistry): void => {
    registry.registerWidget({
      name: MODULE_NAME,
      version: VERSION,
      exports: async () => {
        await ensureBokeh();
        const { DashboardModel, DashboardView } = await import('./widget');
        return { DashboardModel, DashboardView };
      }
    });
  }
};

export default [plugin, widgets];
