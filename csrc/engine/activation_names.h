// Parsing of user-facing activation names into the shared `mmfast::Activation` enum.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <string>

#include "activation.h"

namespace mmfast {

inline Activation parse_activation(c10::string_view name, const char* argument = "activation") {
  for (int i = 0; i < kNumActivations; ++i) {
    if (name == kActivationNames[i]) {
      return static_cast<Activation>(i);
    }
  }
  std::string known;
  for (int i = 0; i < kNumActivations; ++i) {
    known += (i ? ", " : "") + std::string("'") + kActivationNames[i] + "'";
  }
  TORCH_CHECK_VALUE(false, argument, ": unknown activation '", std::string(name), "'; expected one of ",
                    known);
}

}  // namespace mmfast
