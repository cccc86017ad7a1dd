package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	commoncfg "github.com/prometheus/common/config"
)

// Secrets read from files: token_file, api_key_file, bearer_token_file.

// maxSecretFile bounds a *_file secret.
const maxSecretFile = 64 << 10

// envRef is a ${NAME} in a *_file path: the environment's NAME, as in
// systemd's ${CREDENTIALS_DIRECTORY}.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces each ${NAME} of a *_file path by the environment's
// NAME; it returns the first name that is not set, if any.
func expandEnv(path string) (string, string) {
	var unset string
	out := envRef.ReplaceAllStringFunc(path, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		v, ok := os.LookupEnv(name)
		if !ok && unset == "" {
			unset = name
		}
		return v
	})
	return out, unset
}

// readSecret fills *s from file when file is set; both set is an error.
// A ${NAME} in file is the environment's NAME (systemd's
// ${CREDENTIALS_DIRECTORY}); a relative path is under baseDir. A file
// that cannot be read is named by its key only: what was written there may
// be the secret itself, pasted into the wrong key. Errors never show the
// file's content.
func readSecret(s *commoncfg.Secret, file, at, name, baseDir string, errs *errorList) {
	if file == "" {
		return
	}
	if *s != "" {
		errs.add(at+"."+name, "set either %s or %s_file, not both", name, name)
		return
	}
	at += "." + name + "_file"
	notShown := notShownHint(name)
	path, unset := expandEnv(file)
	if unset != "" {
		errs.secret(file)
		errs.fail(at, 0, fmt.Sprintf("names ${%s}, which is not set in the environment (systemd sets ${CREDENTIALS_DIRECTORY} for LoadCredential=); %s", unset, notShown))
		return
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	b, err := readSmall(path)
	if err != nil {
		errs.secret(file)
		errs.fail(at, 0, fmt.Sprintf("cannot read the file it names: %s (%s)", reason(err), notShown))
		return
	}
	if len(b) > maxSecretFile {
		errs.fail(at, 0, fmt.Sprintf("%s is larger than %d bytes; it should hold only the secret", path, maxSecretFile))
		return
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		errs.fail(at, 0, path+" is empty")
		return
	}
	errs.secret(v)
	*s = commoncfg.Secret(v)
}

// readSmall reads at most maxSecretFile+1 bytes of a file: a secret is a
// line of text, and a file that is bigger (a device, a wrong path) is
// refused rather than read without end.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecretFile+1))
}

// reason is an error without the path a *fs.PathError repeats.
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// notShownHint says why a *_file value is not repeated, and what to do
// if it is the secret itself: write it inline where the key has an
// inline form; remediation.ha.etcd's password has none (it is read only
// from a file).
func notShownHint(name string) string {
	if name == "password" {
		return "the value is not shown: if it is the secret itself, put it in a file and name that file here"
	}
	return fmt.Sprintf("the value is not shown: if it is the secret itself, write it as %s instead", name)
}
