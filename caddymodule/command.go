package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/migrations"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "accounts",
		Usage: "genkeys | migrate | create-admin",
		Short: "Manages the accounts database and keys",
		Long: `
Tools for the accounts app.

  genkeys       writes a fresh RSA key pair as .env lines (JWT_PRIVATE_KEY,
                JWT_PUBLIC_KEY) to standard output or --out.
  migrate       applies the database migrations and lists the accounts
                whose email is the same mailbox as an older account's.
  create-admin  creates an active admin, or makes an existing account one.

migrate and create-admin find the database in DATABASE_URL, or in the
accounts block of the config (--config, default ./Caddyfile if present).
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(genkeysCommand(), migrateCommand(), createAdminCommand())
		},
	})
}

func genkeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "genkeys [--bits 4096] [--out FILE]",
		Short: "Writes a new RSA key pair in .env form",
		Long: `Generates an RSA key pair for signing access tokens and writes it as
JWT_PRIVATE_KEY and JWT_PUBLIC_KEY lines of a .env file. The key is never
logged; with --out the file is created with mode 0600 and must not exist.`,
		Args: cobra.NoArgs,
	}
	bits := cmd.Flags().Int("bits", 4096, "RSA key size (2048 is accepted for tests only)")
	out := cmd.Flags().String("out", "", "write to this new file (mode 0600) instead of standard output")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *bits < 2048 {
			return fmt.Errorf("--bits %d: at least 2048", *bits)
		}
		priv, pub, err := accounts.GenerateKeyPair(*bits)
		if err != nil {
			return err
		}
		env := accounts.EnvFile(priv, pub)
		if *out == "" {
			_, err = io.WriteString(cmd.OutOrStdout(), env)
			return err
		}
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(f, env); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return cmd
}

// configFlags adds --config and --adapter to a command that needs the
// accounts block of a config.
func configFlags(cmd *cobra.Command) (config, adapter *string) {
	config = cmd.Flags().StringP("config", "c", "", "config file holding the accounts block (default ./Caddyfile if present)")
	adapter = cmd.Flags().StringP("adapter", "a", "", "name of the config adapter")
	return config, adapter
}

// appFromConfig reads the accounts block of the config (if any), then
// fills what it leaves empty from the environment, as the app does.
func appFromConfig(configFile, adapter string) (*App, error) {
	app := new(App)
	if configFile != "" || fileExists("Caddyfile") {
		raw, _, _, err := caddycmd.LoadConfig(configFile, adapter)
		if err != nil {
			return nil, err
		}
		var cfg struct {
			Apps map[string]json.RawMessage `json:"apps"`
		}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &cfg); err != nil {
				return nil, fmt.Errorf("reading config: %w", err)
			}
		}
		if block, ok := cfg.Apps["accounts"]; ok {
			if err := json.Unmarshal(block, app); err != nil {
				return nil, fmt.Errorf("reading the accounts block: %w", err)
			}
		}
	}
	if err := app.resolve(); err != nil {
		return nil, err
	}
	return app, nil
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// openService connects to the app's database and applies migrations.
func openService(ctx context.Context, app *App) (*accounts.Service, func(), error) {
	pool, err := accounts.NewPool(ctx, app.DatabaseURL, app.MaxConns)
	if err != nil {
		return nil, nil, err
	}
	applied, err := accounts.Migrate(ctx, pool, migrations.FS)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	for _, name := range applied {
		caddy.Log().Info("applied database migration", zap.String("migration", name))
	}
	keys, err := app.loadKeys()
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	svc, err := accounts.New(pool, keys, app.serviceConfig(), caddy.Log())
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return svc, pool.Close, nil
}

func migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate [--config FILE]",
		Short: "Applies the database migrations",
		Args:  cobra.NoArgs,
	}
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		app, err := appFromConfig(*config, *adapter)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
		defer cancel()
		pool, err := accounts.NewPool(ctx, app.DatabaseURL, 1)
		if err != nil {
			return err
		}
		defer pool.Close()
		applied, err := accounts.Migrate(ctx, pool, migrations.FS)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "database is up to date")
		}
		for _, name := range applied {
			fmt.Fprintln(cmd.OutOrStdout(), "applied", name)
		}
		conflicts, err := accounts.EmailKeyConflicts(ctx, pool)
		if err != nil {
			return err
		}
		if len(conflicts) > 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "%d account(s) without an email key: each logs in only with its exact address, "+
				"and nothing was merged or deleted (README, \"Migrating from the FastAPI backend\"):\n", len(conflicts))
		}
		for _, c := range conflicts {
			fmt.Fprintln(cmd.OutOrStdout(), " ", c)
		}
		return nil
	}
	return cmd
}

func createAdminCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create-admin --email EMAIL --password-stdin [--config FILE]",
		Short: "Creates an active admin, or promotes an existing account",
		Long: `Creates an active admin account with the given email, or, if an account
with that email exists, makes it an active admin and sets its password.
The password is read from the first line of standard input and must meet
the password policy.`,
		Args: cobra.NoArgs,
	}
	email := cmd.Flags().String("email", "", "the admin's email address")
	fromStdin := cmd.Flags().Bool("password-stdin", false, "read the password from standard input")
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *email == "" {
			return errors.New("--email is required")
		}
		if !*fromStdin {
			return errors.New("--password-stdin is required: passwords are never taken as arguments")
		}
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading password: %w", err)
		}
		password := strings.TrimRight(line, "\r\n")
		if password == "" {
			return errors.New("no password on standard input")
		}
		app, err := appFromConfig(*config, *adapter)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
		defer cancel()
		svc, closeDB, err := openService(ctx, app)
		if err != nil {
			return err
		}
		defer closeDB()
		u, created, err := svc.CreateAdmin(ctx, *email, password)
		if err != nil {
			return err
		}
		verb := "promoted"
		if created {
			verb = "created"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s admin %s (%s)\n", verb, u.Email, u.ID)
		return nil
	}
	return cmd
}
