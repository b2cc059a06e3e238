/**
 * The user settings of the extension (schema/plugin.json), read through the setting registry
 * when JupyterLab has one; without it the defaults hold.
 */

import type { ISettingRegistry } from '@jupyterlab/settingregistry';

import { MAX_INTERVAL, MIN_INTERVAL } from './protocol';

export interface ITorchMagicSettings {
  /** Seconds between status messages while the side panel is shown. */
  panelInterval: number;
}

/** The schema's defaults (a unit test keeps the two equal). */
export const DEFAULTS: Readonly<ITorchMagicSettings> = { panelInterval: 1.0 };

/**
 * Settings from the registry's composite. The schema already bounds the interval; clamp
 * anyway, as a kernel refuses a period outside MIN_INTERVAL..MAX_INTERVAL.
 */
export function readSettings(composite: { readonly [key: string]: unknown }): ITorchMagicSettings {
  const interval = composite.panelInterval;
  if (typeof interval !== 'number' || !Number.isFinite(interval)) {
    return { ...DEFAULTS };
  }
  return { panelInterval: Math.min(MAX_INTERVAL, Math.max(MIN_INTERVAL, interval)) };
}

/** Calls `apply` with the settings once they are loaded and after every change. */
export async function watchSettings(
  registry: ISettingRegistry | null,
  pluginId: string,
  apply: (settings: ITorchMagicSettings) => void
): Promise<void> {
  if (!registry) {
    return;
  }
  try {
    const settings = await registry.load(pluginId);
    const update = (): void => apply(readSettings(settings.composite));
    settings.changed.connect(update);
    update();
  } catch (reason) {
    console.warn('torchmagic: could not load the settings; using the defaults', reason);
  }
}
