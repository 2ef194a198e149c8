// Running a piece of a test with the engine's fast paths switched by CMIPRUNE_FAST_PATHS, the
// variable restored afterwards to whatever it was.

/** f() with CMIPRUNE_FAST_PATHS unset (on) or '0' (off); the previous value comes back after. */
export async function withFastPaths<T>(on: boolean, f: () => Promise<T> | T): Promise<T> {
  const prev = process.env.CMIPRUNE_FAST_PATHS;
  if (!on) process.env.CMIPRUNE_FAST_PATHS = '0';
  else delete process.env.CMIPRUNE_FAST_PATHS;
  try {
    return await f();
  } finally {
    if (prev === undefined) delete process.env.CMIPRUNE_FAST_PATHS;
    else process.env.CMIPRUNE_FAST_PATHS = prev;
  }
}
