# Test image for the viewer (no registry here): Debian's nginx serving a site, tagged as the image
# `gpuprov viewer up` builds from OHIF-AI's recipe (nginx + /var/www/html), so the product runs unchanged.
ARG BASE
FROM ${BASE}
RUN rm -rf /var/www/html && mkdir -p /var/www/html
COPY site/ /var/www/html/
CMD ["nginx", "-g", "daemon off;"]
