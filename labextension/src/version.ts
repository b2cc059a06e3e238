// The bundler inlines package.json, so the version is defined in one place.
declare const require: (path: string) => { version: string };

/** The version of this extension (package.json). */
export const VERSION: string = require('../package.json').version;
