// Element type of the attention kernels' q/k/v/out (shared by decode.h and prefill.h; plain C++).
#pragma once

namespace squash::attention {

enum class AttentionDtype { kFloat16, kBFloat16 };

}  // namespace squash::attention
