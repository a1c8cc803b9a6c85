// The C header and the C++ wrapper compile as C++17 and may each be included twice.
#include "maskdcpt.h"
#include "maskdcpt.h"
#include "maskdcpt.hpp"
#include "maskdcpt.hpp"

int main() {
    maskdcpt_status status = MASKDCPT_STATUS_OK;
    static_assert(sizeof(maskdcpt_status) == 4, "statuses are 32-bit");
    return maskdcpt_abi_compatible() && status == MASKDCPT_STATUS_OK ? 0 : 1;
}
