// Package migrations holds the numbered SQL files that make the database
// schema. They are applied in order, once, by accounts.Migrate.
package migrations

import "embed"

// FS holds every NNNN_name.sql file of this folder.
//
//go:embed *.sql
var FS embed.FS
