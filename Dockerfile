# The gateway image: Caddy's official builder compiles Caddy with this
# module (xcaddy), and the official Caddy image runs it.
#
#   docker build -t caddy-accounts .
#   docker run -p 80:80 -p 443:443 -e SITE_ADDRESS=example.com \
#     -e DATABASE_URL=... --env-file jwt.env \
#     -v caddy_data:/data -v caddy_config:/config -v app_config:/settings caddy-accounts

FROM caddy:2.11-builder AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN xcaddy build v2.11.9 --output /usr/bin/caddy \
    --with github.com/caddyaccounts/gateway=/src

FROM caddy:2.11
COPY --from=build /usr/bin/caddy /usr/bin/caddy
COPY Caddyfile /etc/caddy/Caddyfile
ENV SITE_ADDRESS=:80 \
    SETTINGS_DIR=/settings \
    FRONTEND_DIR=/srv \
    DOC_SERVICE=doc-service:8001
# /data holds certificates (Caddy's), /config Caddy's autosaved config,
# /settings the settings files the feature services read.
VOLUME ["/data", "/config", "/settings"]
EXPOSE 80 443 443/udp
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
