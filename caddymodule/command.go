package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/fastapi"
	"github.com/caddyaccounts/gateway/mail"
	"github.com/caddyaccounts/gateway/migrations"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "accounts",
		Usage: "genkeys | migrate | create-admin | list-apps | list-groups | create-group | grant | revoke | add-member | remove-member | mail-test",
		Short: "Manages the accounts database and keys",
		Long: `
Tools for the accounts app.

  genkeys       writes a fresh RSA key pair as .env lines (JWT_PRIVATE_KEY,
                JWT_PUBLIC_KEY) to standard output or --out.
  migrate       applies the database migrations and lists the accounts
                whose email is the same mailbox as an older account's.
  create-admin  creates an active admin, or makes an existing account one.
  list-apps     lists the app registry: key, open or closed, name.
  list-groups   lists the groups: id, name, member count, granted apps.
  create-group  creates a group by name (says so if it exists already).
  grant         grants an app to a user or a group.
  revoke        revokes an app from a user or a group.
  add-member    adds a user to a group.
  remove-member removes a user from a group.
  mail-test     sends a test message with the configured mail settings
                and prints the outcome of the SMTP session.

Every command but genkeys and mail-test finds the database in DATABASE_URL, or in the
accounts block of the config (--config, default ./Caddyfile if present),
and applies the migrations first. Users are named by email (any letter
case) or id, groups by name (any letter case) or id, apps by key. The
changes are the API's: audited (with "via": "cli" and no actor) and seen
by every running gateway at the user's next request. A change that is
already in place is no error ("already ..."); an unknown user, group or
app is one, on one line, with a non-zero exit status.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(genkeysCommand(), migrateCommand(), createAdminCommand(),
				listAppsCommand(), listGroupsCommand(), createGroupCommand(),
				grantCommand(true), grantCommand(false), memberCommand(true), memberCommand(false), mailTestCommand())
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
// fills what it leaves empty from the environment, as the app does. It
// requires a database.
func appFromConfig(configFile, adapter string) (*App, error) {
	app, err := readAppConfig(configFile, adapter)
	if err != nil {
		return nil, err
	}
	if err := app.resolve(); err != nil {
		return nil, err
	}
	return app, nil
}

// readAppConfig reads the accounts block of the config (if any), not
// yet filled from the environment.
func readAppConfig(configFile, adapter string) (*App, error) {
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
		return withService(cmd, *config, *adapter, func(ctx context.Context, svc *accounts.Service) error {
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
		})
	}
	return cmd
}

// withService runs f with a service on the database of the config that
// config and adapter name (see appFromConfig), within two minutes.
func withService(cmd *cobra.Command, config, adapter string, f func(ctx context.Context, svc *accounts.Service) error) error {
	app, err := appFromConfig(config, adapter)
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
	return cliError(f(ctx, svc))
}

// cliError turns an API error (such as 409 Group name already exists)
// into its detail alone; other errors pass unchanged.
func cliError(err error) error {
	var fe *fastapi.Error
	if errors.As(err, &fe) && fe.Err == nil {
		return errors.New(fe.Detail)
	}
	return err
}

// notFound turns a 404 of a lookup into `no <what> "<ref>"`.
func notFound(err error, what, ref string) error {
	var fe *fastapi.Error
	if errors.As(err, &fe) && fe.Status == http.StatusNotFound {
		return fmt.Errorf("no %s %q", what, ref)
	}
	return err
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func listAppsCommand() *cobra.Command {
	return listCommand("list-apps", "Lists the app registry",
		`Lists every app, one a line, by key: the key, "open" (open to every
signed-in user) or "closed" (granted users and groups only), and the
name, separated by tabs. --json writes what GET /api/admin/apps answers.`,
		(*accounts.Service).ListApps,
		func(a accounts.App) string {
			access := "closed"
			if a.OpenToAll {
				access = "open"
			}
			return a.Key + "\t" + access + "\t" + a.Name
		})
}

func listGroupsCommand() *cobra.Command {
	return listCommand("list-groups", "Lists the groups",
		`Lists every group, one a line, by name: the id, the name, the number of
members and the keys of the apps granted to it (comma-separated, empty
for none), separated by tabs. --json writes the group objects of
GET /api/admin/groups.`,
		(*accounts.Service).ListGroups,
		func(g *accounts.Group) string {
			return fmt.Sprintf("%s\t%s\t%d\t%s", g.ID, g.Name, g.MemberCount, strings.Join(g.Apps, ","))
		})
}

// listCommand makes a command that prints what list returns, a line of
// each item, or with --json the JSON array.
func listCommand[T any](name, short, long string, list func(*accounts.Service, context.Context) ([]T, error), line func(T) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   name + " [--json] [--config FILE]",
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
	}
	asJSON := cmd.Flags().Bool("json", false, "write a JSON array")
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return withService(cmd, *config, *adapter, func(ctx context.Context, svc *accounts.Service) error {
			items, err := list(svc, ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if *asJSON {
				return writeJSON(out, items)
			}
			for _, it := range items {
				fmt.Fprintln(out, line(it))
			}
			return nil
		})
	}
	return cmd
}

func createGroupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create-group --name NAME [--description TEXT] [--config FILE]",
		Short: "Creates a group",
		Long: `Creates a group named NAME (1 to 100 characters; unique in any letter
case) and prints its id. If a group has that name already, it is left as
it is and the command says so, with success.`,
		Args: cobra.NoArgs,
	}
	name := cmd.Flags().String("name", "", "the group's name")
	description := cmd.Flags().String("description", "", "the group's description")
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *name == "" {
			return errors.New("--name is required")
		}
		var desc *string
		if cmd.Flags().Changed("description") {
			desc = description
		}
		return withService(cmd, *config, *adapter, func(ctx context.Context, svc *accounts.Service) error {
			g, err := svc.CreateGroup(ctx, accounts.CommandLine, *name, desc)
			verb := "created"
			if err != nil {
				var fe *fastapi.Error
				if !errors.As(err, &fe) || fe.Status != http.StatusConflict {
					return err
				}
				// Taken: report the group that has the name.
				if g, err = svc.FindGroup(ctx, *name); err != nil {
					return err
				}
				verb = "already exists:"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s group %q (%s)\n", verb, g.Name, g.ID)
			return nil
		})
	}
	return cmd
}

// target is the user or group that --user or --group names.
type target struct {
	kind, label, id string // kind "user" or "group"
}

// findTarget resolves exactly one of userRef and groupRef.
func findTarget(ctx context.Context, svc *accounts.Service, userRef, groupRef string) (target, error) {
	switch {
	case (userRef == "") == (groupRef == ""):
		return target{}, errors.New("name either --user or --group")
	case userRef != "":
		u, err := svc.FindUser(ctx, userRef)
		if err != nil {
			return target{}, notFound(err, "user", userRef)
		}
		return target{"user", u.Email, u.ID}, nil
	default:
		g, err := svc.FindGroup(ctx, groupRef)
		if err != nil {
			return target{}, notFound(err, "group", groupRef)
		}
		return target{"group", strconv.Quote(g.Name), g.ID}, nil
	}
}

func (t target) String() string { return fmt.Sprintf("%s %s (%s)", t.kind, t.label, t.id) }

// grantCommand is grant (grant) or revoke.
func grantCommand(grant bool) *cobra.Command {
	name, short, long := "grant", "Grants an app to a user or a group",
		`Grants the app KEY to a user (by email or id) or to a group (by name or
id): the user, or each member of the group, may use it at the next
request, on every gateway. Granting again is no error ("already").`
	if !grant {
		name, short, long = "revoke", "Revokes an app from a user or a group",
			`Revokes the app KEY from a user (by email or id) or a group (by name or
id). The user may still use the app if it is open to all, granted
through another group, or if they are an admin. Revoking what is not
granted is no error ("already").`
	}
	cmd := &cobra.Command{
		Use:   name + " --app KEY (--user EMAIL|ID | --group NAME|ID) [--config FILE]",
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
	}
	appKey := cmd.Flags().String("app", "", "the app's key")
	userRef := cmd.Flags().String("user", "", "the user's email or id")
	groupRef := cmd.Flags().String("group", "", "the group's name or id")
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *appKey == "" {
			return errors.New("--app is required")
		}
		if (*userRef == "") == (*groupRef == "") {
			return errors.New("name either --user or --group")
		}
		return withService(cmd, *config, *adapter, func(ctx context.Context, svc *accounts.Service) error {
			app, err := svc.FindApp(ctx, *appKey)
			if err != nil {
				return notFound(err, "app", *appKey)
			}
			t, err := findTarget(ctx, svc, *userRef, *groupRef)
			if err != nil {
				return err
			}
			set := svc.SetUserApp
			if t.kind == "group" {
				set = svc.SetGroupApp
			}
			changed, err := set(ctx, accounts.CommandLine, t.id, app.Key, grant)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case grant && changed:
				fmt.Fprintf(out, "granted app %s to %s\n", app.Key, t)
			case grant:
				fmt.Fprintf(out, "app %s already granted to %s\n", app.Key, t)
			case changed:
				fmt.Fprintf(out, "revoked app %s from %s\n", app.Key, t)
			default:
				fmt.Fprintf(out, "app %s already not granted to %s\n", app.Key, t)
			}
			return nil
		})
	}
	return cmd
}

// memberCommand is add-member (add) or remove-member.
func memberCommand(add bool) *cobra.Command {
	name, short, long := "add-member", "Adds a user to a group",
		`Adds a user (by email or id) to a group (by name or id). Adding a member
again is no error ("already"); a user may be in at most 200 groups.`
	if !add {
		name, short, long = "remove-member", "Removes a user from a group",
			`Removes a user (by email or id) from a group (by name or id). Removing
one who is not a member is no error ("already").`
	}
	cmd := &cobra.Command{
		Use:   name + " --group NAME|ID --user EMAIL|ID [--config FILE]",
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
	}
	groupRef := cmd.Flags().String("group", "", "the group's name or id")
	userRef := cmd.Flags().String("user", "", "the user's email or id")
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *groupRef == "" || *userRef == "" {
			return errors.New("--group and --user are required")
		}
		return withService(cmd, *config, *adapter, func(ctx context.Context, svc *accounts.Service) error {
			g, err := findTarget(ctx, svc, "", *groupRef)
			if err != nil {
				return err
			}
			u, err := findTarget(ctx, svc, *userRef, "")
			if err != nil {
				return err
			}
			changed, err := svc.SetMember(ctx, accounts.CommandLine, g.id, u.id, add)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case add && changed:
				fmt.Fprintf(out, "added %s to %s\n", u, g)
			case add:
				fmt.Fprintf(out, "%s already in %s\n", u, g)
			case changed:
				fmt.Fprintf(out, "removed %s from %s\n", u, g)
			default:
				fmt.Fprintf(out, "%s already not in %s\n", u, g)
			}
			return nil
		})
	}
	return cmd
}

func mailTestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mail-test --to ADDRESS [--config FILE]",
		Short: "Sends a test message with the configured mail settings",
		Long: `Sends the test message to ADDRESS through the SMTP server of SMTP_URL and
MAIL_FROM (or smtp_url and from in the mail block of the accounts option
of the config, --config, default ./Caddyfile if present), with the same
TLS policy, credentials and send timeout the gateway uses. Prints one
line: the server, whether TLS was used (and its version), whether the
session authenticated, and the server's answer; on failure, how far the
session got, with exit status 1. The password is never printed. No
database is needed.`,
		Args: cobra.NoArgs,
	}
	to := cmd.Flags().String("to", "", "the address to send the test message to")
	config, adapter := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *to == "" {
			return errors.New("--to is required")
		}
		app, err := readAppConfig(*config, *adapter)
		if err != nil {
			return err
		}
		app.resolveOptions()
		m := app.Mail
		if m.SMTPURL == "" {
			return errors.New("no SMTP server: set SMTP_URL or smtp_url")
		}
		mailer, sendTimeout, err := m.newMailer()
		if err != nil {
			return err
		}
		// The send timeout bounds the session; this bounds the rest.
		ctx, cancel := context.WithTimeout(cmd.Context(), sendTimeout+mail.DefaultDialTimeout)
		defer cancel()
		line, err := mailer.Probe(ctx, *to)
		if err != nil {
			if line == "" {
				return err
			}
			return errors.New(line)
		}
		fmt.Fprintln(cmd.OutOrStdout(), line)
		return nil
	}
	return cmd
}
