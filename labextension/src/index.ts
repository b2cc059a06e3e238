import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ISessionContext } from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';

import { ensureBokeh } from './bokeh';
import { CommRegistry, Subscription } from './comm';
import { PANEL_ID, TorchMagicPanel, torchmagicIcon } from './panel';
import { MODULE_NAME } from './protocol';
import { STATUS_ITEM_ID, TorchMagicStatusItem } from './statusbar';
import { VERSION } from './version';


export const SHOW_PANEL_COMMAND = 'torchmagic:show-panel';
export const STOP_TRAINING_COMMAND = 'torchmagic:stop-training';

/** Seconds between status messages while the side panel is shown. */
const PANEL_INTERVAL = 1.0;

/** BokehJS, the comm target, the side panel, the status-bar item and the commands. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'torchmagic-lab:plugin',
  description: 'torchmagic: side panel, status bar, kernel comm and offline BokehJS.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, IConsoleTracker, IStatusBar],
  activate: async (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    consoles: IConsoleTracker | null,
    statusBar: IStatusBar | null
  ): Promise<void> => {
    // Start loading BokehJS first: widget views of plots need it on the page.
    const bokeh = ensureBokeh();

    const comms = new CommRegistry(VERSION);
    const panel = new TorchMagicPanel(VERSION, comms, id => void comms.interrupt(id));
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

    /** The notebook or console in front, if any. */
    const currentSession = (): ISessionContext | undefined => {
      const current = app.shell.currentWidget;
      for (const tracker of [notebooks, consoles]) {
        const widget = tracker?.currentWidget;
        if (widget && (current === null || widget === current || tracker?.has(current))) {
          return widget.sessionContext;
        }
      }
      return (notebooks?.currentWidget ?? consoles?.currentWidget)?.sessionContext;
    };

    /** The kernel Stop training acts on: the current one, else the only one that is training. */
    const trainingKernel = (): string | undefined => {
      const current = comms.entryFor(currentSession());
      if (current) {
        return current.id;
      }
      const running = [...comms.entries.values()].filter(e => e.status?.run?.status === 'running');
      return running.length === 1 ? running[0].id : undefined;
    };

    app.commands.addCommand(STOP_TRAINING_COMMAND, {
      label: 'Stop training',
      caption: 'Interrupt the kernel: %%train stops after the current step',
      isEnabled: () => trainingKernel() !== undefined,
      execute: async () => {
        const id = trainingKernel();
        if (id) {
          await comms.interrupt(id);
        }
      }
    });
    palette?.addItem({ command: STOP_TRAINING_COMMAND, category: 'torchmagic' });

    let statusItem: TorchMagicStatusItem | null = null;
    if (statusBar) {
      statusItem = new TorchMagicStatusItem(() => app.commands.execute(SHOW_PANEL_COMMAND));
      const item = statusItem;
      statusBar.registerStatusItem(STATUS_ITEM_ID, {
        item,
        align: 'left',
        rank: 5,
        isActive: () => item.active,
        activeStateChanged: item.activeChanged
      });
    }

    // What each kernel is asked to send: the panel shown costs a status message a second per
    // kernel; otherwise only the current kernel reports events, for the status-bar item.
    const updateSubscriptions = (): void => {
      const currentId = comms.entryFor(currentSession())?.id;
      for (const id of comms.entries.keys()) {
        let want: Subscription = 'off';
        if (panel.isVisible) {
          want = PANEL_INTERVAL;
        } else if (statusItem && id === currentId) {
          want = null;
        }
        comms.setSubscription(id, want);
      }
      statusItem?.update_(comms.entries.get(currentId ?? ''));
    };
    comms.kernelsChanged.connect(updateSubscriptions);
    comms.statusChanged.connect((_, id) => {
      if (statusItem && id === comms.entryFor(currentSession())?.id) {
        statusItem.update_(comms.entries.get(id));
      } else if (statusItem && !comms.entries.has(id)) {
        updateSubscriptions();
      }
    });
    panel.visibilityChanged.connect(updateSubscriptions);
    for (const tracker of [notebooks, consoles]) {
      if (tracker) {
        tracker.forEach(widget => comms.watch(widget.sessionContext));
        tracker.widgetAdded.connect((_, widget) => comms.watch(widget.sessionContext));
        tracker.currentChanged.connect(updateSubscriptions);
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
