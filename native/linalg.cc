#include "linalg.h"

void InitLinalg(Napi::Env env, Napi::Object exports) {}
