package command

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// ByteSize is a pflag.Value for a size in bytes written as a Kubernetes
// quantity: 1048576, 512Mi, 10Gi, 10G. Negative sizes and sizes beyond an
// int64 are refused. Use it as fs.Var((*command.ByteSize)(&o.Field), ...)
// on an int64 field; its default is the field's value.
type ByteSize int64

// String shows the size as a binary quantity (10Gi).
func (b *ByteSize) String() string {
	return resource.NewQuantity(int64(*b), resource.BinarySI).String()
}

// Type names the value in --help.
func (b *ByteSize) Type() string { return "size" }

// Set parses s.
func (b *ByteSize) Set(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil || q.Sign() < 0 {
		return fmt.Errorf("want a size such as 512Mi or 10Gi")
	}
	n, ok := q.AsInt64()
	if !ok {
		return fmt.Errorf("size %s is out of range", s)
	}
	*b = ByteSize(n)
	return nil
}
