// Command hello is the smallest useful payload for lamina's image tests.
//
// It prints a fixed greeting so tests can tell that the binary ran inside a
// "FROM scratch" image. Given a URL it also fetches it over HTTPS, which
// proves the image ships (or lacks) a CA bundle: Go's crypto/x509 reads
// SSL_CERT_FILE / the usual Linux paths, so a missing bundle shows up as
// "x509: certificate signed by unknown authority".
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	fmt.Println("hello, scratch!")
	if len(os.Args) < 2 {
		return
	}
	if err := fetch(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// fetch copies the body of url to stdout.
func fetch(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
