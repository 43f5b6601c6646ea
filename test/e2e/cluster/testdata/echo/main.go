// Command echo is the end-to-end cluster test's workload: an HTTP server on
// :8080 that answers every request with "echo from HOSTNAME PATH".
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "echo from %s %s\n", host, r.URL.Path)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
