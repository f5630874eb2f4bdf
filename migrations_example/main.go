// A stand-in for the app itself: heroku/go builds it into bin/server (the Procfile's web process).
// The buildpack under test only cares about db/migrations; this file makes the example look like
// the Go apps that used the golang-migrate release-phase recipe.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
