# Test image for Orthanc (no registry here): Debian's Orthanc 1.10 with its DICOMweb plugin, laid out
# as jodogne/orthanc-plugins is (config in /etc/orthanc/, data in /var/lib/orthanc/db, `Orthanc /etc/orthanc/`).
ARG BASE
FROM ${BASE}
RUN rm -f /etc/orthanc/*.json && mkdir -p /var/lib/orthanc/db
ENTRYPOINT ["/usr/sbin/Orthanc"]
CMD ["/etc/orthanc/"]
