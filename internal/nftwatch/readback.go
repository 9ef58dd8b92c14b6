package nftwatch

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"sigs.k8s.io/knftables"
)

// ReadPrefixSet reads back the elements of one of the guarded table's
// interval sets of addresses, sorted by address. ok is false when an
// element is not one the controller writes (not a prefix or an address):
// the caller then treats the table as not intact and rewrites it.
func ReadPrefixSet(ctx context.Context, nft knftables.Interface, set string) (prefixes []netip.Prefix, ok bool, err error) {
	els, err := nft.ListElements(ctx, "set", set)
	if err != nil {
		return nil, false, fmt.Errorf("list nftables set %s: %w", set, err)
	}
	for _, e := range els {
		p, ok := ParseSetKey(e.Key)
		if !ok {
			return nil, false, nil
		}
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return prefixes, true, nil
}

// ParseSetKey parses a set element's key as nft lists it: a prefix, or an
// address for a host prefix (/32, /128).
func ParseSetKey(key []string) (netip.Prefix, bool) {
	if len(key) != 1 {
		return netip.Prefix{}, false
	}
	if p, err := netip.ParsePrefix(key[0]); err == nil {
		return p, true
	}
	if a, err := netip.ParseAddr(key[0]); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// RemoveTable deletes the guarded table nft is bound to (its feature turned
// off); an absent table is fine. what names it in the error ("inet trellis-encrypt").
func RemoveTable(ctx context.Context, nft knftables.Interface, what string) error {
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	err := nft.Run(ctx, tx)
	if err == nil || knftables.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("remove nftables table %s: %w", what, err)
}
