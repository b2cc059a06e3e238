import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ISessionContext } from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';

import { ensureBokeh } from './bokeh';
import { CommRegistry } from './comm';
import {
  COMMAND_CATEGORY,
  PANEL_ID,
  PLUGIN_ID,
  SHOW_PANEL_COMMAND,
  STATUS_ITEM_ID,
  STOP_TRAINING_COMMAND,
  WIDGETS_PLUGIN_ID
} from './constants';
import { ignoreControlStatus } from './discovery';
import { TorchMagicPanel, torchmagicIcon } from './panel';
import { MODULE_NAME } from './protocol';
import { DEFAULTS, watchSettings } from './settings';
import { TorchMagicStatusItem } from './statusbar';
import { kernelToStop, subscriptionFor } from './subscriptions';
import { VERSION } from './version';

/** The notebook and console trackers, either of which JupyterLab may lack. */
type Trackers = (INotebookTracker | IConsoleTracker | null)[];

/** The side panel in the left area, restored with the layout. */
function addPanel(
  app: JupyterFrontEnd,
  comms: CommRegistry,
  restorer: ILayoutRestorer | null
): TorchMagicPanel {
  const panel = new TorchMagicPanel(VERSION, comms, id => void comms.interrupt(id));
  app.shell.add(panel, 'left', { rank: 900 });
  restorer?.add(panel, PANEL_ID);
  return panel;
}

/** The session of the notebook or console in front, if any. */
function currentSessionOf(app: JupyterFrontEnd, trackers: Trackers): ISessionContext | undefined {
  const current = app.shell.currentWidget;
  for (const tracker of trackers) {
    const widget = tracker?.currentWidget;
    if (widget && (current === null || widget === current || tracker?.has(current))) {
      return widget.sessionContext;
    }
  }
  for (const tracker of trackers) {
    if (tracker?.currentWidget) {
      return tracker.currentWidget.sessionContext;
    }
  }
  return undefined;
}

/** Show Panel and Stop training, also in the command palette. */
function addCommands(
  app: JupyterFrontEnd,
  palette: ICommandPalette | null,
  panel: TorchMagicPanel,
  comms: CommRegistry,
  currentSession: () => ISessionContext | undefined
): void {
  app.commands.addCommand(SHOW_PANEL_COMMAND, {
    label: 'torchmagic: Show Panel',
    caption: 'Show the torchmagic side panel',
    icon: torchmagicIcon,
    execute: () => {
      app.shell.activateById(panel.id);
    }
  });
  palette?.addItem({ command: SHOW_PANEL_COMMAND, category: COMMAND_CATEGORY });

  const trainingKernel = (): string | undefined =>
    kernelToStop(comms.entryFor(currentSession())?.id, comms.entries.values());
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
  palette?.addItem({ command: STOP_TRAINING_COMMAND, category: COMMAND_CATEGORY });
}

/** The status-bar item, when JupyterLab has a status bar; clicking it shows the panel. */
function addStatusItem(
  app: JupyterFrontEnd,
  statusBar: IStatusBar | null
): TorchMagicStatusItem | null {
  if (!statusBar) {
    return null;
  }
  const item = new TorchMagicStatusItem(() => app.commands.execute(SHOW_PANEL_COMMAND));
  statusBar.registerStatusItem(STATUS_ITEM_ID, {
    item,
    align: 'left',
    rank: 5,
    isActive: () => item.active,
    activeStateChanged: item.activeChanged
  });
  return item;
}

/**
 * The comm target on every notebook and console kernel, and what each kernel is asked to send
 * as the panel shows or hides, the current document changes and the settings change.
 */
function connectKernels(
  app: JupyterFrontEnd,
  comms: CommRegistry,
  panel: TorchMagicPanel,
  statusItem: TorchMagicStatusItem | null,
  trackers: Trackers,
  settingRegistry: ISettingRegistry | null
): void {
  const currentSession = (): ISessionContext | undefined => currentSessionOf(app, trackers);
  let panelInterval = DEFAULTS.panelInterval;

  const updateSubscriptions = (): void => {
    const currentId = comms.entryFor(currentSession())?.id;
    const context = {
      panelVisible: panel.isVisible,
      panelInterval,
      statusItem: statusItem !== null,
      currentId
    };
    for (const id of comms.entries.keys()) {
      comms.setSubscription(id, subscriptionFor(id, context));
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
  for (const tracker of trackers) {
    if (tracker) {
      tracker.forEach(widget => comms.watch(widget.sessionContext));
      tracker.widgetAdded.connect((_, widget) => comms.watch(widget.sessionContext));
      tracker.currentChanged.connect(updateSubscriptions);
    }
  }
  void watchSettings(settingRegistry, PLUGIN_ID, settings => {
    panelInterval = settings.panelInterval;
    updateSubscriptions();
  });
}

/** BokehJS, the comm target, the side panel, the status-bar item and the commands. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'torchmagic: side panel, status bar, kernel comm and offline BokehJS.',
  autoStart: true,
  optional: [
    ICommandPalette,
    ILayoutRestorer,
    INotebookTracker,
    IConsoleTracker,
    IStatusBar,
    ISettingRegistry
  ],
  activate: async (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    consoles: IConsoleTracker | null,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null
  ): Promise<void> => {
    // Start loading BokehJS first: widget views of plots need it on the page.
    const bokeh = ensureBokeh();
    // Before any kernel connects: control requests must not show a running kernel idle.
    ignoreControlStatus();
    const trackers: Trackers = [notebooks, consoles];
    const comms = new CommRegistry(VERSION);
    const panel = addPanel(app, comms, restorer);
    addCommands(app, palette, panel, comms, () => currentSessionOf(app, trackers));
    const statusItem = addStatusItem(app, statusBar);
    connectKernels(app, comms, panel, statusItem, trackers, settingRegistry);
    // Plain jupyter_bokeh widgets need BokehJS as soon as they render: hold activation until
    // it is there (it comes from this server, so this is quick; it never rejects).
    panel.setBokeh(await bokeh);
  }
};

/** The dashboard widget model and view. */
const widgets: JupyterFrontEndPlugin<void> = {
  id: WIDGETS_PLUGIN_ID,
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
