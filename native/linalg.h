// Batched dense linear algebra for the estimators (owned by the estimators stage).
#pragma once
#include <napi.h>

// Registers the linalg functions on the addon's exports.
void InitLinalg(Napi::Env env, Napi::Object exports);
