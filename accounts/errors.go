package accounts

import (
	"net/http"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Errors of authentication and authorisation, shared by every route that
// needs a signed-in caller. Their detail texts are part of the HTTP
// contract and must not change.
var (
	errNotAuthenticated      = fastapi.BearerError("Not authenticated")
	errInvalidCredentials    = fastapi.BearerError("Could not validate credentials")
	errForbidden             = fastapi.NewError(http.StatusForbidden, "Not enough permissions")
	errMultipleAuthorization = fastapi.NewError(http.StatusBadRequest, "Multiple Authorization headers")
)
