/* The one version of kmsd and kmsctl: CMake's project(VERSION), and the build's
 * identity from `git describe` (or -DKMS_BUILD_ID=, else "unknown"), written at
 * build time by cmake/build_id.cmake. */
#ifndef KMS_COMMON_VERSION_H
#define KMS_COMMON_VERSION_H

/* "0.2.0": the release, as the package and the image label carry it */
const char *kms_version(void);
/* "v0.2.0-3-gabc1234-dirty", a bare commit "abc1234", or "unknown" */
const char *kms_build_id(void);

#endif
