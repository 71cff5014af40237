# `cmake --install build [--prefix /usr]` and `cpack -G DEB` (issue 13).
#   PREFIX/sbin/kmsd, PREFIX/bin/kmsctl, man pages, bash completion, docs,
#   PREFIX/lib/systemd/system/kmsd.service, sysusers.d, tmpfiles.d, and the
#   configuration in /etc/kmsd when the prefix is /usr (else PREFIX/etc/kmsd).
# why: the prefix may be given at install time (--prefix), so the paths that
# depend on it (sysconfdir, the unit's ExecStart) are decided then, in install(CODE).
include(GNUInstallDirs)

install(TARGETS kmsd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS kmsctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES deploy/man/kmsd.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES deploy/man/kmsctl.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES deploy/completion/kmsctl DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
install(FILES README.md deploy/kms.properties.sample docs/upgrade.md docs/monitoring.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY deploy/prometheus/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/prometheus)
install(FILES deploy/systemd/kmsd.sysusers DESTINATION lib/sysusers.d RENAME kmsd.conf)
install(FILES deploy/systemd/kmsd.tmpfiles DESTINATION lib/tmpfiles.d RENAME kmsd.conf)

install(CODE "set(KMS_SRC \"${CMAKE_SOURCE_DIR}\")
set(KMS_BIN \"${CMAKE_BINARY_DIR}\")
set(KMS_SBINDIR \"${CMAKE_INSTALL_SBINDIR}\")
set(KMS_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")")
install(CODE [[
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(etc "/etc")
  else()
    set(etc "${CMAKE_INSTALL_PREFIX}/etc")
  endif()
  file(READ "${KMS_SRC}/deploy/systemd/kmsd.service.in" unit)
  string(REPLACE "@SBINDIR@" "${CMAKE_INSTALL_PREFIX}/${KMS_SBINDIR}" unit "${unit}")
  string(REPLACE "@SYSCONFDIR@" "${etc}" unit "${unit}")
  string(REPLACE "@DOCDIR@" "${CMAKE_INSTALL_PREFIX}/${KMS_DOCDIR}" unit "${unit}")
  file(WRITE "${KMS_BIN}/generated/kmsd.service" "${unit}")
  file(INSTALL "${KMS_BIN}/generated/kmsd.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  # why: the configuration is the administrator's: an existing one is never overwritten
  if(EXISTS "$ENV{DESTDIR}${etc}/kmsd/kms.properties")
    message(STATUS "Kept: $ENV{DESTDIR}${etc}/kmsd/kms.properties (yours; the new default is in the docs)")
  else()
    file(INSTALL "${KMS_SRC}/deploy/package/kms.properties" DESTINATION "${etc}/kmsd"
         FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
  endif()
]])

# cpack -G DEB (configure with -DCMAKE_INSTALL_PREFIX=/usr): kmsd_<version>_<arch>.deb,
# Depends from dpkg-shlibdeps, /etc/kmsd/kms.properties a conffile
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kmsd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "kmsd")
set(CPACK_PACKAGE_CONTACT "kmsd maintainers <kmsd-maintainers@example.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "key-management server with mutual TLS and HSM-held master keys")
set(CPACK_PACKAGE_DESCRIPTION "kmsd creates, wraps and unwraps site keys (customer, user and workspace keys)
under a master key held by a KMIP HSM or Vault's Transit engine, for callers
identified by their TLS client certificates. kmsctl manages its keystore,
master keys and cluster.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.invalid/kmsd")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS OFF)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/package/postinst ${CMAKE_SOURCE_DIR}/deploy/package/prerm
    ${CMAKE_SOURCE_DIR}/deploy/package/postrm ${CMAKE_SOURCE_DIR}/deploy/package/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
include(CPack)
