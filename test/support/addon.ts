// The one rule for tests that need the native engine (build/Release/cmiprune_engine.node):
//   test('...', { skip: addonSkip }, async () => { ... })
import { loadEngine } from '../../src/engine/index.js';

/** CI=true (or 1/yes), as GitHub Actions and most CI services set it */
const IN_CI = /^(true|1|yes)$/i.test(process.env.CI ?? '');

function probe(): string | false {
  try {
    loadEngine();
    return false;
  } catch (e) {
    const reason = (e as Error).message; // e.g. 'native engine not built: run `npm run build:native`'
    // Under CI a missing or unloadable addon must fail, not skip: CI always builds it, so a skip
    // there would hide a broken build. Throwing here fails every test file that imports this one.
    if (IN_CI) throw new Error(`CI=${process.env.CI}: the native engine must be built and loadable in CI, but ${reason}`, { cause: e });
    return reason;
  }
}

/** false when the native addon loads; otherwise why not (a skip reason). Never a skip under CI: see probe. */
export const addonSkip: string | false = probe();
