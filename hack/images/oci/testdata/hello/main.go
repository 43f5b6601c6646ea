// Command hello prints a greeting and the value of main.greeting; the oci
// package's tests put it into an image.
package main

import "fmt"

var greeting = "hello"

func main() { fmt.Println(greeting) }
