/* The header compiles as strict C99 and may be included twice. */
#include "maskdcpt.h"
#include "maskdcpt.h"

int main(void) {
    maskdcpt_options options = maskdcpt_options_default();
    maskdcpt_image image = {MASKDCPT_PIXEL_FORMAT_NV12, MASKDCPT_YUV_MATRIX_BT601_LIMITED, 2, 2, {0}, {0}};
    (void)image;
    return maskdcpt_abi_compatible() && options.struct_size == sizeof(maskdcpt_options) ? 0 : 1;
}
