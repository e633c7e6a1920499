"""The Swagger UI page at `/`, loading nothing from outside the server.

BentoML's page (`_bentoml_impl/server/main-openapi.html`) loads Google Tag Manager and links
out to GitHub, and Swagger UI's default `validatorUrl` fetches a badge image from
validator.swagger.io; an offline or privacy-minded deployment must do none of that.  This page
uses the Swagger UI files BentoML serves under /static_content/ and our own initializer with
the validator off.  The front door (services/bento/front_door.py) answers both paths.
"""

from __future__ import annotations

INIT_PATH = "/docs-init.js"

INDEX_HTML = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>zooserve</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="./docs-init.js" charset="UTF-8"></script>
  </body>
</html>
"""

INIT_JS = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "./docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
"""

PAGES: dict[str, tuple[bytes, bytes]] = {
    "/": (INDEX_HTML, b"text/html; charset=utf-8"),
    INIT_PATH: (INIT_JS, b"text/javascript; charset=utf-8"),
}
