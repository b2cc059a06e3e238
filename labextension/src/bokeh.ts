/**
 * BokehJS without a CDN.
 *
 * jupyter_bokeh's widget view needs `window.Bokeh` on the page before it is created. The
 * torchmagic server extension serves the BokehJS files of the server's own bokeh install under
 * `{base_url}torchmagic/static/bokeh/` (behind Jupyter's authentication) and announces its
 * version in the page config; this module loads them once per page.
 */

import { PageConfig, URLExt } from '@jupyterlab/coreutils';

/** URL path below the server's base URL where the server extension serves BokehJS. */
export const BOKEH_STATIC_PATH = 'torchmagic/static/bokeh/';

/** Page config option holding the bokeh version the server extension serves. */
export const BOKEH_VERSION_OPTION = 'torchmagicBokehVersion';

/** The core first, then the extensions a notebook plot may use (WebGL, widgets, tables). */
const CORE_SCRIPT = 'bokeh.min.js';
const EXTRA_SCRIPTS = ['bokeh-gl.min.js', 'bokeh-widgets.min.js', 'bokeh-tables.min.js'];

const LOAD_TIMEOUT_MS = 60000;

export interface IBokehStatus {
  /** 'page' when BokehJS was already there, 'server' when we loaded it, 'failed' otherwise. */
  origin: 'page' | 'server' | 'failed';
  version: string | null;
  error?: string;
}

declare global {
  interface Window {
    /** BokehJS, once loaded; only its version is read here. */
    Bokeh?: { version?: string };
  }
}

function scriptUrl(name: string): string {
  const url = URLExt.join(PageConfig.getBaseUrl(), BOKEH_STATIC_PATH, name);
  const version = PageConfig.getOption(BOKEH_VERSION_OPTION);
  // With a version the server lets the browser cache the file; without one it revalidates.
  return version ? `${url}?v=${encodeURIComponent(version)}` : url;
}

function loadScript(url: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const script = document.createElement('script');
    const timer = window.setTimeout(() => {
      reject(new Error(`timed out loading ${url}`));
    }, LOAD_TIMEOUT_MS);
    script.src = url;
    script.async = false;
    script.dataset.torchmagic = 'bokeh';
    script.onload = () => {
      window.clearTimeout(timer);
      resolve();
    };
    script.onerror = () => {
      window.clearTimeout(timer);
      reject(new Error(`could not load ${url}`));
    };
    document.head.appendChild(script);
  });
}

let loading: Promise<IBokehStatus> | null = null;

/** `window.Bokeh` now (a call, so the compiler does not assume it unchanged by loading). */
function pageBokeh(): Window['Bokeh'] {
  return window.Bokeh;
}

async function load(): Promise<IBokehStatus> {
  const present = pageBokeh();
  if (present !== undefined) {
    return { origin: 'page', version: present.version ?? null };
  }
  try {
    await loadScript(scriptUrl(CORE_SCRIPT));
    if (pageBokeh() === undefined) {
      throw new Error(`${CORE_SCRIPT} loaded but did not define window.Bokeh`);
    }
    await Promise.all(EXTRA_SCRIPTS.map(name => loadScript(scriptUrl(name))));
    return { origin: 'server', version: pageBokeh()?.version ?? null };
  } catch (reason) {
    const error = reason instanceof Error ? reason.message : String(reason);
    const served = PageConfig.getOption(BOKEH_VERSION_OPTION)
      ? ''
      : ' The torchmagic server extension does not seem to be enabled' +
        ' (see `jupyter server extension list`).';
    console.error(`torchmagic: BokehJS is not available: ${error}.${served}`);
    return { origin: 'failed', version: null, error: error + served };
  }
}

/**
 * Loads BokehJS once per page unless the page already has it. Never rejects: the status says
 * whether `window.Bokeh` is usable.
 */
export function ensureBokeh(): Promise<IBokehStatus> {
  if (loading === null) {
    loading = load();
  }
  return loading;
}
